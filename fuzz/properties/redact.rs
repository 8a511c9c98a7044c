// The property of the `redact` fuzz target. spawn-redact's tests include this file too and
// check it on every input kept in fuzz/regressions/redact/ (hence no inner attributes or
// `//!` comments here; the includer puts `spawn_redact` in scope).
//
// Redaction of granted secrets in what an agent writes: up to three secrets drawn from the
// bytes, and a stream made of the rest with their forms planted where a 0xff byte stands,
// cut into chunks the bytes choose. The stream's output is the whole input's redaction
// (however it was cut), and no form of any secret is left in it outside the markers.

use spawn_redact::{forms, Redactor};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// `out` without the markers: the runs of text between them.
fn between_markers<'a>(out: &'a [u8], markers: &[Vec<u8>]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < out.len() {
        if let Some(m) = markers.iter().find(|m| out[i..].starts_with(m)) {
            pieces.push(&out[start..i]);
            i += m.len();
            start = i;
        } else {
            i += 1;
        }
    }
    pieces.push(&out[start..]);
    pieces
}

fn check(data: &[u8]) {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let n = usize::from(first % 3) + 1;
    if data.len() < n {
        return;
    }
    let (lens, data) = data.split_at(n);
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    let mut at = 0;
    for &l in lens {
        let end = (at + usize::from(l % 24) + 1).min(data.len());
        if at < end {
            secrets.push(data[at..end].to_vec());
        }
        at = end;
    }
    if secrets.is_empty() {
        return;
    }
    let names = ["A", "B", "C"];
    let redactor = Redactor::new(
        secrets
            .iter()
            .enumerate()
            .map(|(i, s)| (names[i], s.as_slice())),
    )
    .expect("a redactor of any values");
    let rest = &data[at..];
    let mut input = Vec::new();
    for (i, &b) in rest.iter().enumerate() {
        if b == 0xff {
            let s = &secrets[i % secrets.len()];
            let f = forms(s);
            input.extend_from_slice(&f[i % f.len()]);
        } else {
            input.push(b);
        }
    }
    let whole = redactor.redact(&input);
    let mut stream = redactor.stream();
    let mut out = Vec::new();
    let (mut pos, mut k) = (0, 0);
    while pos < input.len() {
        let step = usize::from(rest.get(k).copied().unwrap_or(1) % 17) + 1;
        let end = (pos + step).min(input.len());
        stream.push(&input[pos..end], &mut out);
        pos = end;
        k += 1;
    }
    stream.finish(&mut out);
    assert_eq!(out, whole, "the stream's output is not the whole input's redaction");
    let markers: Vec<Vec<u8>> = names
        .iter()
        .map(|n| format!("[REDACTED:{n}]").into_bytes())
        .collect();
    for piece in between_markers(&out, &markers) {
        for s in &secrets {
            for f in forms(s) {
                assert!(!contains(piece, &f), "a form of a secret passed: {f:?}");
            }
        }
    }
}
