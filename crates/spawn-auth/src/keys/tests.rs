use super::*;

fn key(env: KeyEnv) -> ApiKey {
    ApiKey::generate(env).unwrap()
}

#[test]
fn a_new_key_reads_back_as_itself() {
    for env in [KeyEnv::Live, KeyEnv::Test] {
        let k = key(env);
        let text = k.expose().to_owned();
        assert_eq!(text.len(), KEY_LEN);
        assert!(text.starts_with(&format!("spawn_sk_{}_", env.as_str())));
        let back = ApiKey::parse(&text).unwrap();
        assert_eq!(back.env(), env);
        assert!(back.hash().matches(&k.hash()));
        assert_eq!(back.hint(), text[..18]);
    }
}

#[test]
fn keys_are_distinct_and_their_hashes_too() {
    let a = key(KeyEnv::Live);
    let b = key(KeyEnv::Live);
    assert_ne!(a.expose(), b.expose());
    assert!(!a.hash().matches(&b.hash()));
    assert!(a.hash().to_hex().starts_with("sha256:") && a.hash().to_hex().len() == 71);
}

#[test]
fn every_one_character_typo_is_refused_before_any_lookup() {
    let k = key(KeyEnv::Live);
    let text = k.expose().as_bytes().to_vec();
    let mut tried = 0;
    for at in 0..text.len() {
        for c in ALPHABET.iter().chain(b"_ABZ019-.+/=") {
            if *c == text[at] {
                continue;
            }
            let mut typo = text.clone();
            typo[at] = *c;
            let typo = String::from_utf8(typo).unwrap();
            assert!(ApiKey::parse(&typo).is_err(), "accepted a typo at {at}");
            tried += 1;
        }
    }
    assert!(tried > 2000);
}

#[test]
fn every_swap_of_neighbours_is_refused() {
    let k = key(KeyEnv::Test);
    let text = k.expose().as_bytes().to_vec();
    for at in 0..text.len() - 1 {
        if text[at] == text[at + 1] {
            continue;
        }
        let mut swapped = text.clone();
        swapped.swap(at, at + 1);
        let swapped = String::from_utf8(swapped).unwrap();
        assert!(ApiKey::parse(&swapped).is_err(), "accepted a swap at {at}");
    }
}

#[test]
fn hostile_spellings_are_refused_with_a_reason_that_shows_no_key() {
    let k = key(KeyEnv::Live);
    let good = k.expose().to_owned();
    let secret_part = &good[14..];
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "length"),
        ("spawn_sk_live_".into(), "length"),
        (good[..KEY_LEN - 1].to_owned(), "length"),
        (format!("{good}a"), "length"),
        (format!("{good}\n"), "length"),
        (format!(" {}", &good[1..]), "prefix"),
        (format!("spawn_sk_prod_{secret_part}"), "prefix"),
        (format!("SPAWN_SK_LIVE_{secret_part}"), "prefix"),
        (format!("spawn-sk-live-{secret_part}"), "prefix"),
        (format!("spawn_pk_live_{secret_part}"), "prefix"),
        (good.to_uppercase(), "prefix"),
        (
            format!("spawn_sk_live_{}", secret_part.to_uppercase()),
            "character",
        ),
        (format!("{}\0", &good[..KEY_LEN - 1]), "character"),
        (format!("{} ", &good[..KEY_LEN - 1]), "character"),
        (format!("{}1", &good[..KEY_LEN - 1]), "character"),
        (format!("{}8", &good[..KEY_LEN - 1]), "character"),
        // A Cyrillic "а" in place of the last character: two bytes, so the length is off.
        (format!("{}а", &good[..KEY_LEN - 1]), "length"),
        // The right length in characters, not in bytes.
        (format!("{}é", &good[..KEY_LEN - 2]), "character"),
    ];
    for (text, want) in &cases {
        let err = ApiKey::parse(text).expect_err(want);
        let kind = match err {
            AuthError::Length(_) => "length",
            AuthError::Prefix => "prefix",
            AuthError::Character(_) => "character",
            AuthError::Checksum => "checksum",
            AuthError::NotCanonical => "canonical",
            AuthError::Random(_) => "random",
            AuthError::Invalid(_) | AuthError::Yaml(_) | AuthError::Escalation(_) => "rbac",
        };
        assert_eq!(kind, *want, "{text:?}: {err}");
        let msg = err.to_string();
        assert!(!msg.contains(&secret_part[..8]), "{msg}");
    }
}

#[test]
fn only_the_one_canonical_spelling_is_a_key() {
    // The last secret character with an unused bit set, and the checksum made to match:
    // the same 256 bits in another spelling.
    let k = key(KeyEnv::Live);
    let mut text = k.expose().as_bytes().to_vec();
    let last = PREFIX_LEN + SECRET_CHARS - 1;
    let v = symbol(text[last]).unwrap();
    text[last] = ALPHABET[usize::from(v | 1)];
    if text[last] == k.expose().as_bytes()[last] {
        text[last] = ALPHABET[usize::from(v | 2)];
    }
    let body = String::from_utf8(text[..PREFIX_LEN + SECRET_CHARS].to_vec()).unwrap();
    let mut respelled = body.clone();
    push_base32(
        &crc32fast::hash(body.as_bytes()).to_be_bytes(),
        &mut respelled,
    );
    assert!(matches!(
        ApiKey::parse(&respelled),
        Err(AuthError::NotCanonical)
    ));
}

#[test]
fn nothing_prints_the_key() {
    let k = key(KeyEnv::Live);
    let shown = format!("{k:?}");
    assert!(!shown.contains(&k.expose()[18..]), "{shown}");
    assert!(shown.contains("live"));
}

#[test]
fn base32_round_trips_every_byte_length() {
    for len in 0usize..40 {
        let bytes: Vec<u8> = (0..len)
            .map(|i| ((i * 37 + 11) % 256).to_le_bytes()[0])
            .collect();
        let mut text = String::new();
        push_base32(&bytes, &mut text);
        assert_eq!(text.len(), (len * 8).div_ceil(5));
        let values: Vec<u8> = text.bytes().map(|b| symbol(b).unwrap()).collect();
        let mut back = vec![0u8; len];
        unpack(&values, &mut back);
        assert_eq!(back, bytes);
    }
}

#[test]
fn the_format_is_stable_a_key_issued_once_stays_valid() {
    // Made outside this code (Python's zlib.crc32) from the bytes 0..32: the format is a
    // contract with every key already handed out.
    let live = "spawn_sk_live_aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypqwoqvogy";
    let test = "spawn_sk_test_aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypqbqsxqwa";
    assert_eq!(ApiKey::parse(live).unwrap().env(), KeyEnv::Live);
    assert_eq!(ApiKey::parse(test).unwrap().env(), KeyEnv::Test);
    // The environment is covered by the checksum: the same secret under the other prefix
    // is refused.
    let swapped = format!("spawn_sk_test_{}", &live[14..]);
    assert!(matches!(ApiKey::parse(&swapped), Err(AuthError::Checksum)));
}
