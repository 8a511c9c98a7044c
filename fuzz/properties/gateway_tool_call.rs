// The property of the `gateway_tool_call` fuzz target. spawn-gateway's tests include this
// file too and check it on every input kept in fuzz/regressions/gateway_tool_call/ (hence
// no inner attributes or `//!` comments here; the includer puts `spawn_gateway` in scope).
//
// What a model asks the built-in loop to run: a tool's name (the first line) and its
// arguments (the rest, as JSON when they are). A call the loop accepts names a tool the
// grants offer; its path, if it has one, is absolute, has no `.` or `..` left in it and lies
// under the roots the tool may use; `exec`'s language is a granted one and its code a
// non-empty string; the runner is told its limits. Nothing panics.

use spawn_gateway::agent::{check as check_tool, Grants};

fn check_call(data: &[u8]) {
    let (name, args) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let name = String::from_utf8_lossy(name);
    let args: serde_json::Value = match serde_json::from_slice(args) {
        Ok(v) => v,
        Err(_) => serde_json::Value::String(String::from_utf8_lossy(args).into_owned()),
    };
    let grants = Grants {
        languages: vec!["python".into(), "bash".into()],
        exec_timeout: std::time::Duration::from_secs(5),
        exec_memory: Some(1 << 28),
        net: true,
        read_roots: vec!["/workspace".into(), "/data".into()],
        write_roots: vec!["/workspace".into()],
    };
    let Ok(input) = check_tool(&name, &args, &grants) else {
        return;
    };
    assert!(
        ["exec", "http_fetch", "fs_read", "fs_write", "fs_list", "finish"].contains(&name.as_ref()),
        "{name}"
    );
    match name.as_ref() {
        "fs_read" | "fs_list" | "fs_write" => {
            let path = std::path::Path::new(input["path"].as_str().expect("a path"));
            assert!(path.is_absolute(), "{path:?}");
            assert!(
                path.components().all(|c| matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )),
                "{path:?}"
            );
            let roots = if name == "fs_write" { &grants.write_roots } else { &grants.read_roots };
            assert!(roots.iter().any(|r| path.starts_with(r)), "{path:?}");
            assert!(input["_limits"]["roots"].is_object());
        }
        "exec" => {
            let lang = input["language"].as_str().expect("a language");
            assert!(grants.languages.iter().any(|l| l == lang), "{lang}");
            assert!(!input["code"].as_str().expect("code").is_empty());
            assert!(input["_limits"]["timeout"].is_number());
        }
        _ => {}
    }
}

fn check(data: &[u8]) {
    check_call(data);
}
