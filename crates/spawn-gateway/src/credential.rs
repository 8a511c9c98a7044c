//! The credential a client presents: `x-api-key: KEY` (Anthropic's SDKs and Claude Code
//! with `ANTHROPIC_API_KEY`) or `Authorization: Bearer KEY` (OpenAI's SDKs, Codex,
//! Anthropic's Python SDK, `ANTHROPIC_AUTH_TOKEN`): exactly one, or the same in both.
//! Anything ambiguous is refused, never guessed (two different keys, a header twice, another
//! scheme, control characters, spaces inside).

/// The key `headers` (name, value) present; why not, never quoting a value.
pub fn presented<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Result<&'h str, &'static str> {
    let mut api_key: Option<&str> = None;
    let mut bearer: Option<&str> = None;
    for (name, value) in headers {
        let slot = if name.eq_ignore_ascii_case("x-api-key") {
            &mut api_key
        } else if name.eq_ignore_ascii_case("authorization") {
            &mut bearer
        } else {
            continue;
        };
        if slot.is_some() {
            return Err("a credential header given twice");
        }
        let text = std::str::from_utf8(value).map_err(|_| "a credential that is not UTF-8")?;
        let key = if name.eq_ignore_ascii_case("authorization") {
            let (scheme, rest) = text
                .split_once(' ')
                .ok_or("an Authorization header without a scheme")?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err("an Authorization scheme other than Bearer");
            }
            rest.trim_start_matches(' ')
        } else {
            text
        };
        if key.is_empty() {
            return Err("an empty credential");
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a credential with spaces or control characters");
        }
        *slot = Some(key);
    }
    match (api_key, bearer) {
        (Some(a), Some(b)) if a != b => Err("two different credentials"),
        (Some(k), _) | (None, Some(k)) => Ok(k),
        (None, None) => Err("no credential (x-api-key or Authorization: Bearer)"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn of(h: &[(&'static str, &'static str)]) -> Result<&'static str, &'static str> {
        presented(h.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn either_header_or_both_alike() {
        assert_eq!(of(&[("x-api-key", "K1")]), Ok("K1"));
        assert_eq!(of(&[("X-Api-Key", "K1")]), Ok("K1"));
        assert_eq!(of(&[("authorization", "Bearer K2")]), Ok("K2"));
        assert_eq!(of(&[("Authorization", "bearer   K2")]), Ok("K2"));
        assert_eq!(
            of(&[("x-api-key", "K"), ("authorization", "Bearer K")]),
            Ok("K")
        );
        assert_eq!(of(&[("content-type", "x"), ("x-api-key", "K")]), Ok("K"));
    }

    /// Every way to make the credential ambiguous: refused with the reason.
    #[test]
    fn ambiguous_credentials_are_refused() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "no credential"),
            (&[("x-api-key", "")], "empty"),
            (&[("authorization", "Bearer ")], "empty"),
            (&[("authorization", "Bearer")], "without a scheme"),
            (
                &[("authorization", "Basic dXNlcjpwdw==")],
                "other than Bearer",
            ),
            (&[("authorization", "Bearerx K")], "other than Bearer"),
            (&[("authorization", "Bearer K L")], "spaces"),
            (&[("authorization", "Bearer K\tL")], "spaces"),
            (&[("x-api-key", "K\r\nX-Evil: 1")], "control"),
            (&[("x-api-key", "K\0")], "control"),
            (&[("x-api-key", "Kä")], "control"),
            (&[("x-api-key", "A"), ("x-api-key", "B")], "twice"),
            (&[("x-api-key", "A"), ("X-API-KEY", "A")], "twice"),
            (
                &[("authorization", "Bearer A"), ("authorization", "Bearer A")],
                "twice",
            ),
            (
                &[("x-api-key", "A"), ("authorization", "Bearer B")],
                "two different",
            ),
        ];
        for (headers, want) in cases {
            let got = presented(headers.iter().map(|(n, v)| (*n, v.as_bytes())));
            let err = got.expect_err(&format!("{headers:?}"));
            assert!(err.contains(want), "{headers:?}: {err}");
        }
        assert_eq!(
            presented([("x-api-key", &[0xff, 0xfe][..])]),
            Err("a credential that is not UTF-8")
        );
    }
}
