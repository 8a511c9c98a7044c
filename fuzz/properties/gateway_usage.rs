// The property of the `gateway_usage` fuzz target. spawn-gateway's tests include this file
// too and check it on every input kept in fuzz/regressions/gateway_usage/ (hence no inner
// attributes or `//!` comments here; the includer puts `spawn_gateway` in scope).
//
// What a provider streams back, arbitrary bytes: the usage read is the same however the
// stream is cut into chunks (the first byte picks the endpoint, the second the cut), and
// nothing panics; a whole body is read without panicking too.

use spawn_gateway::request::Endpoint;
use spawn_gateway::usage::Meter;

fn check(data: &[u8]) {
    let [pick, cut, stream @ ..] = data else {
        return;
    };
    let endpoint = match pick % 3 {
        0 => Endpoint::Messages,
        1 => Endpoint::ChatCompletions,
        _ => Endpoint::Responses,
    };
    let whole = {
        let mut m = Meter::new(endpoint);
        m.push(stream);
        m.finish()
    };
    let cut = usize::from(*cut).max(1);
    let mut m = Meter::new(endpoint);
    for chunk in stream.chunks(cut) {
        m.push(chunk);
    }
    assert_eq!(m.finish(), whole);
    let _ = Meter::of_body(endpoint, stream);
}
