// The property of the `client_cert` fuzz target. spawn-auth's tests include this file too
// and check it on every input kept in fuzz/seeds/client_cert/ and
// fuzz/regressions/client_cert/ (hence no inner attributes or `//!` comments here; the
// includer puts `spawn_auth` in scope).
//
// What a client certificate's holder controls: the leaf's DER (its subject, once a CA
// signed it; any bytes for this target). `principal_of` never panics; a refusal's reason is
// one of `cert::REFUSALS`, so none carries anything of the certificate; a name it accepts is
// a User whose name is a principal name and stands, byte for byte, in the certificate.

use spawn_auth::cert::{principal_of, REFUSALS};
use spawn_auth::rbac::{check_principal, SubjectKind};

/// Panics when `data` breaks the property.
pub fn check(data: &[u8]) {
    match principal_of(data) {
        Ok(subject) => {
            assert_eq!(subject.kind, SubjectKind::User);
            assert!(
                check_principal(&subject.name).is_ok(),
                "accepted {:?}, not a principal name",
                subject.name
            );
            let name = subject.name.as_bytes();
            assert!(
                data.windows(name.len()).any(|w| w == name),
                "accepted {:?}, which the certificate does not hold",
                subject.name
            );
        }
        Err(reason) => assert!(REFUSALS.contains(&reason), "unexpected reason {reason:?}"),
    }
}
