//! Who a client certificate names (mutual TLS), as Kubernetes reads one: the subject's
//! CommonName is the User's name.
//!
//! This module only reads the name. Whether the certificate may be believed is decided
//! before it is called, by the TLS stack (spawnd: rustls' `WebPkiClientVerifier`: a chain to
//! the configured client CA, the validity period, the clientAuth extended key usage,
//! revocation): [`principal_of`] must only be given a leaf certificate that was verified.
//! Whoever can sign with that CA can name anyone, so the CA is trusted to name users and
//! should be one kept for this alone.
//!
//! A name is accepted only when all of these hold: the certificate is DER that
//! `x509-cert` reads whole; its subject holds exactly one CommonName (attribute 2.5.4.3,
//! in any RDN); that CommonName is a UTF8String, PrintableString or IA5String; its text is a
//! principal name ([`crate::rbac::check_principal`]: 1–253 printable ASCII characters
//! without spaces, the rule RoleBinding subjects follow). Everything else in the subject
//! (Organization, …) is ignored: it makes no groups. A refusal's reason is one of
//! [`REFUSALS`]: none depends on the certificate's content.

use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use x509_cert::der::{Decode as _, Tag, Tagged as _};
use x509_cert::Certificate;

use crate::rbac::{Subject, SubjectKind};

/// The certificate is not an X.509 certificate this module can read.
pub const NOT_A_CERTIFICATE: &str = "the client certificate is not a readable X.509 certificate";
/// The subject has no CommonName.
pub const NO_COMMON_NAME: &str = "the client certificate's subject has no CommonName";
/// The subject has more than one CommonName.
pub const MANY_COMMON_NAMES: &str = "the client certificate's subject has more than one CommonName";
/// The CommonName is not a UTF8String, PrintableString or IA5String (or not a valid one).
pub const NOT_TEXT: &str =
    "the client certificate's CommonName is not a UTF8String, PrintableString or IA5String";
/// The CommonName is text, but not a principal name.
pub const NOT_A_PRINCIPAL: &str =
    "the client certificate's CommonName is not a principal name (1 to 253 printable ASCII characters without spaces)";

/// Every reason [`principal_of`] refuses a certificate with.
pub const REFUSALS: &[&str] = &[
    NOT_A_CERTIFICATE,
    NO_COMMON_NAME,
    MANY_COMMON_NAMES,
    NOT_TEXT,
    NOT_A_PRINCIPAL,
];

/// The CommonName attribute type (2.5.4.3).
const COMMON_NAME: x509_cert::der::oid::ObjectIdentifier =
    x509_cert::der::oid::db::rfc4519::COMMON_NAME;

/// The User a verified client certificate (`leaf_der`, DER) names, or why it names none (one
/// of [`REFUSALS`]).
pub fn principal_of(leaf_der: &[u8]) -> Result<Subject, &'static str> {
    let cert = Certificate::from_der(leaf_der).map_err(|_| NOT_A_CERTIFICATE)?;
    let mut names = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|attr| attr.oid == COMMON_NAME);
    let cn = names.next().ok_or(NO_COMMON_NAME)?;
    if names.next().is_some() {
        return Err(MANY_COMMON_NAMES);
    }
    let text: &str = match cn.value.tag() {
        Tag::Utf8String => cn
            .value
            .decode_as::<Utf8StringRef<'_>>()
            .map(|s| s.as_str())
            .map_err(|_| NOT_TEXT)?,
        Tag::PrintableString => cn
            .value
            .decode_as::<PrintableStringRef<'_>>()
            .map(|s| s.as_str())
            .map_err(|_| NOT_TEXT)?,
        Tag::Ia5String => cn
            .value
            .decode_as::<Ia5StringRef<'_>>()
            .map(|s| s.as_str())
            .map_err(|_| NOT_TEXT)?,
        _ => return Err(NOT_TEXT),
    };
    crate::rbac::check_principal(text).map_err(|_| NOT_A_PRINCIPAL)?;
    Ok(Subject {
        kind: SubjectKind::User,
        name: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use x509_cert::attr::AttributeTypeAndValue;
    use x509_cert::der::asn1::{Any, BitString, SetOfVec, UtcTime};
    use x509_cert::der::oid::db::{rfc4519, rfc5912};
    use x509_cert::der::{Encode as _, Tag};
    use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
    use x509_cert::time::{Time, Validity};
    use x509_cert::{Certificate, TbsCertificate, Version};

    use super::*;

    /// A certificate (DER) whose subject is `subject`. Nothing else about it matters here:
    /// `principal_of` reads only the subject (the signature is checked before, by rustls).
    fn with_subject(subject: Name) -> Vec<u8> {
        let alg = AlgorithmIdentifierOwned {
            oid: rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        };
        let cert = Certificate {
            tbs_certificate: TbsCertificate {
                version: Version::V3,
                serial_number: SerialNumber::new(&[1]).unwrap(),
                signature: alg.clone(),
                issuer: "CN=test-ca".parse().unwrap(),
                validity: Validity {
                    not_before: time(1_700_000_000),
                    not_after: time(1_800_000_000),
                },
                subject,
                subject_public_key_info: SubjectPublicKeyInfoOwned {
                    algorithm: AlgorithmIdentifierOwned {
                        oid: rfc5912::ID_EC_PUBLIC_KEY,
                        parameters: Some(Any::encode_from(&rfc5912::SECP_256_R_1).unwrap()),
                    },
                    subject_public_key: BitString::from_bytes(&[4; 65]).unwrap(),
                },
                issuer_unique_id: None,
                subject_unique_id: None,
                extensions: None,
            },
            signature_algorithm: alg,
            signature: BitString::from_bytes(&[0; 8]).unwrap(),
        };
        cert.to_der().unwrap()
    }

    fn time(unix: u64) -> Time {
        Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(unix)).unwrap())
    }

    /// An attribute of type `oid` whose value is `bytes` tagged `tag` (not checked: the
    /// point is to make what a hostile CA could).
    fn attr(
        oid: x509_cert::der::oid::ObjectIdentifier,
        tag: Tag,
        bytes: &[u8],
    ) -> AttributeTypeAndValue {
        AttributeTypeAndValue {
            oid,
            value: Any::new(tag, bytes.to_vec()).unwrap(),
        }
    }

    /// A subject of one RDN per group of attributes.
    fn subject(rdns: Vec<Vec<AttributeTypeAndValue>>) -> Name {
        RdnSequence(
            rdns.into_iter()
                .map(|attrs| RelativeDistinguishedName(SetOfVec::try_from(attrs).unwrap()))
                .collect(),
        )
    }

    fn cn(tag: Tag, bytes: &[u8]) -> AttributeTypeAndValue {
        attr(rfc4519::COMMON_NAME, tag, bytes)
    }

    fn user(name: &str) -> Subject {
        Subject {
            kind: SubjectKind::User,
            name: name.into(),
        }
    }

    #[test]
    fn the_one_common_name_is_the_user() {
        let org = attr(rfc4519::O, Tag::Utf8String, b"admins");
        for (name, tag) in [
            ("alice", Tag::Utf8String),
            ("alice", Tag::PrintableString),
            ("alice@example.com", Tag::Ia5String),
            ("alice@example.com", Tag::Utf8String),
            ("system:node:n-1", Tag::Utf8String),
        ] {
            let der = with_subject(subject(vec![
                vec![org.clone()],
                vec![cn(tag, name.as_bytes())],
            ]));
            assert_eq!(principal_of(&der), Ok(user(name)), "{name} as {tag}");
        }
        // Parsed from the usual string form too, beside other attributes.
        let der = with_subject("CN=bob,OU=eng,O=example,C=DE".parse().unwrap());
        assert_eq!(principal_of(&der), Ok(user("bob")));
        // The longest name a principal may have.
        let long = "a".repeat(crate::rbac::MAX_PRINCIPAL_BYTES);
        let der = with_subject(subject(vec![vec![cn(Tag::Utf8String, long.as_bytes())]]));
        assert_eq!(principal_of(&der), Ok(user(&long)));
    }

    #[test]
    fn a_subject_that_names_no_one_or_several_is_refused() {
        let two_rdns = subject(vec![
            vec![cn(Tag::Utf8String, b"alice")],
            vec![cn(Tag::Utf8String, b"admin")],
        ]);
        let one_rdn_two_cns = subject(vec![vec![
            cn(Tag::Utf8String, b"alice"),
            cn(Tag::PrintableString, b"admin"),
        ]]);
        let same_twice = subject(vec![
            vec![cn(Tag::Utf8String, b"alice")],
            vec![cn(Tag::Utf8String, b"alice")],
        ]);
        let too_long = "a".repeat(crate::rbac::MAX_PRINCIPAL_BYTES + 1);
        let cases: Vec<(&str, Name, &str)> = vec![
            ("an empty subject", subject(vec![]), NO_COMMON_NAME),
            (
                "only an Organization",
                subject(vec![vec![attr(rfc4519::O, Tag::Utf8String, b"admins")]]),
                NO_COMMON_NAME,
            ),
            (
                "the name as an OU",
                subject(vec![vec![attr(rfc4519::OU, Tag::Utf8String, b"alice")]]),
                NO_COMMON_NAME,
            ),
            ("two CNs in two RDNs", two_rdns, MANY_COMMON_NAMES),
            ("two CNs in one RDN", one_rdn_two_cns, MANY_COMMON_NAMES),
            ("the same CN twice", same_twice, MANY_COMMON_NAMES),
            (
                "an empty CN",
                subject(vec![vec![cn(Tag::Utf8String, b"")]]),
                NOT_A_PRINCIPAL,
            ),
            (
                "a CN with a space",
                subject(vec![vec![cn(Tag::Utf8String, b"alice admin")]]),
                NOT_A_PRINCIPAL,
            ),
            (
                "a CN with a newline",
                subject(vec![vec![cn(Tag::Utf8String, b"alice\nUser/admin")]]),
                NOT_A_PRINCIPAL,
            ),
            (
                "a CN with a NUL",
                subject(vec![vec![cn(Tag::Utf8String, b"admin\0alice")]]),
                NOT_A_PRINCIPAL,
            ),
            (
                "a CN with a zero-width space",
                subject(vec![vec![cn(Tag::Utf8String, "ad\u{200b}min".as_bytes())]]),
                NOT_A_PRINCIPAL,
            ),
            (
                "a CN in Cyrillic that looks like admin",
                subject(vec![vec![cn(Tag::Utf8String, "аdmin".as_bytes())]]),
                NOT_A_PRINCIPAL,
            ),
            (
                "a CN one byte too long",
                subject(vec![vec![cn(Tag::Utf8String, too_long.as_bytes())]]),
                NOT_A_PRINCIPAL,
            ),
            (
                "a CN that is not UTF-8",
                subject(vec![vec![cn(Tag::Utf8String, b"al\xffice")]]),
                NOT_TEXT,
            ),
            (
                "a PrintableString with a character it cannot hold",
                subject(vec![vec![cn(Tag::PrintableString, b"alice@x")]]),
                NOT_TEXT,
            ),
            (
                "an IA5String beyond ASCII",
                subject(vec![vec![cn(Tag::Ia5String, b"alic\xe9")]]),
                NOT_TEXT,
            ),
            (
                "a BMPString",
                subject(vec![vec![cn(Tag::BmpString, b"\0a\0l\0i\0c\0e")]]),
                NOT_TEXT,
            ),
            (
                "a TeletexString",
                subject(vec![vec![cn(Tag::TeletexString, b"alice")]]),
                NOT_TEXT,
            ),
            (
                "an OCTET STRING",
                subject(vec![vec![cn(Tag::OctetString, b"alice")]]),
                NOT_TEXT,
            ),
        ];
        for (what, name, want) in cases {
            assert_eq!(principal_of(&with_subject(name)), Err(want), "{what}");
        }
    }

    #[test]
    fn what_is_not_a_certificate_is_refused() {
        let good = with_subject("CN=alice".parse().unwrap());
        let mut trailing = good.clone();
        trailing.push(0);
        let mut flipped = good.clone();
        flipped[0] = 0x31;
        for (what, der) in [
            ("nothing", Vec::new()),
            ("garbage", b"not a certificate".to_vec()),
            ("PEM, not DER", b"-----BEGIN CERTIFICATE-----\n".to_vec()),
            ("cut short", good[..good.len() / 2].to_vec()),
            ("a byte after it", trailing),
            ("a SET, not a SEQUENCE", flipped),
        ] {
            assert_eq!(principal_of(&der), Err(NOT_A_CERTIFICATE), "{what}");
        }
    }

    /// No reason names anything of the certificate: each is one of the fixed few, and the
    /// list holds no two alike.
    #[test]
    fn the_reasons_are_a_fixed_few() {
        let mut sorted = REFUSALS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), REFUSALS.len());
    }
}

#[cfg(test)]
mod fuzz_property {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate as spawn_auth;
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/properties/client_cert.rs"
    ));

    /// The `client_cert` fuzz target's seeds (certificates made with openssl) and every
    /// input it ever failed on (fuzz/regressions/client_cert/, once there are any) keep the
    /// target's property; the seeds read as openssl wrote them.
    #[test]
    fn fuzz_inputs_keep_the_client_cert_property() {
        let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let mut kept = 0;
        for dir in ["seeds/client_cert", "regressions/client_cert"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir)) else {
                continue;
            };
            for entry in entries {
                check(&std::fs::read(entry.unwrap().path()).unwrap());
                kept += 1;
            }
        }
        assert!(kept > 0, "no inputs in {}", fuzz.display());
        let seed = |name: &str| std::fs::read(fuzz.join("seeds/client_cert").join(name)).unwrap();
        // `openssl req -subj /O=example/CN=alice`, and two more.
        assert_eq!(principal_of(&seed("alice")).unwrap().name, "alice");
        assert_eq!(
            principal_of(&seed("two-common-names")),
            Err(spawn_auth::cert::MANY_COMMON_NAMES)
        );
        assert_eq!(
            principal_of(&seed("no-common-name")),
            Err(spawn_auth::cert::NO_COMMON_NAME)
        );
    }
}
