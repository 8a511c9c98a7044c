// The property of the `gateway_request` fuzz target. spawn-gateway's tests include this
// file too and check it on every input kept in fuzz/regressions/gateway_request/ (hence no
// inner attributes or `//!` comments here; the includer puts `spawn_gateway` in scope).
//
// What an agent sends the model gateway: a method and path from the first line of the
// bytes, a body from the rest. The endpoint is one of the few served or none; a body read
// as a model call has a non-empty model of at most 256 bytes and an output cap from 1 to
// the largest taken; a refusal's message is spawn's own words (no quote or brace), never
// the body; nothing panics.

use spawn_gateway::request::{inspect, Endpoint, MAX_CHOICES, MAX_OUTPUT_CAP};

fn check(data: &[u8]) {
    let (head, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let head = String::from_utf8_lossy(head);
    let (method, path) = head.split_once(' ').unwrap_or((&head, ""));
    let _ = Endpoint::of(method, path);
    for endpoint in [
        Endpoint::Messages,
        Endpoint::CountTokens,
        Endpoint::ChatCompletions,
        Endpoint::Responses,
    ] {
        match inspect(endpoint, body) {
            Ok(i) => {
                assert!(!i.model.is_empty() && i.model.len() <= 256);
                if let Some(c) = i.max_output {
                    // Chat Completions' `n` completions each have the cap.
                    let most = if endpoint == Endpoint::ChatCompletions {
                        MAX_OUTPUT_CAP * MAX_CHOICES
                    } else {
                        MAX_OUTPUT_CAP
                    };
                    assert!((1..=most).contains(&c));
                }
                if endpoint == Endpoint::Messages {
                    assert!(i.max_output.is_some());
                }
            }
            // Messages are spawn's own words: no quote or brace (which any quoted part of a
            // body would bring), and never a whole body that has one.
            Err((_, message)) => {
                assert!(!message.contains('"') && !message.contains('{'), "{message}");
                if body.contains(&b'"') {
                    assert!(!message.as_bytes().windows(body.len()).any(|w| w == body));
                }
            }
        }
    }
}
