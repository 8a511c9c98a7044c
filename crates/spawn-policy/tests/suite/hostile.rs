//! Manifests built to exhaust memory or time, or to slip something past the parser. Each
//! must fail quickly with a clear error, never panic or hang.

use std::time::{Duration, Instant};

use spawn_policy::{parse_agent, PolicyError, MAX_MANIFEST_BYTES};

use super::{with_spec, MINIMAL};

/// Generous bound for any single hostile parse in a debug build.
const FAST: Duration = Duration::from_secs(5);

/// Bound for the slowest documents the flow-collection cap still admits: about 3 s in a
/// debug build here, 0.6 s in release. The point is "no hang", with room for slow CI.
const SLOW: Duration = Duration::from_secs(30);

fn timed_err(text: &str) -> String {
    timed_err_within(text, FAST)
}

fn timed_err_within(text: &str, limit: Duration) -> String {
    let start = Instant::now();
    let result = parse_agent(text);
    let elapsed = start.elapsed();
    assert!(elapsed < limit, "took {elapsed:?}");
    match result {
        Ok(agent) => panic!("expected an error, parsed {:?}", agent.metadata),
        Err(e) => e.to_string(),
    }
}

#[test]
fn ten_megabyte_manifest_is_refused_before_parsing() {
    let mut text = MINIMAL.to_owned();
    while text.len() <= 10 * 1024 * 1024 {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let start = Instant::now();
    let e = parse_agent(&text).unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(100));
    assert!(matches!(e, PolicyError::TooLarge { max } if max == MAX_MANIFEST_BYTES));
    assert_eq!(
        e.to_string(),
        "the manifest is larger than the limit of 1048576 bytes"
    );
    // One byte over the limit is already too large; exactly at the limit is parsed.
    let mut at_limit = MINIMAL.to_owned();
    at_limit.push('#');
    while at_limit.len() < MAX_MANIFEST_BYTES {
        at_limit.push('x');
    }
    assert!(parse_agent(&at_limit).is_ok());
    at_limit.push('x');
    assert!(matches!(
        parse_agent(&at_limit),
        Err(PolicyError::TooLarge { .. })
    ));
}

#[test]
fn billion_laughs_is_refused() {
    let mut text = String::from(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        let refs = [prev.as_str(); 9].join(", ");
        text.push_str(&format!("x{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("spec:\n  command: *a9\n");
    let e = timed_err(&text);
    assert!(e.starts_with("line 4, column 1: unknown field `x0`"), "{e}");

    // The same bomb where the schema has room for a list of strings.
    let mut text = String::from(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec:\n  command: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n  capabilities:\n    net:\n      policy: restricted\n      allowlist: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]\n      denylist: [*a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1]\n",
    );
    text.push('\n');
    let e = timed_err(&text);
    assert!(
        e.contains("invalid type: sequence, expected a string"),
        "{e}"
    );
}

#[test]
fn alias_of_a_large_string_cannot_multiply_memory() {
    // 200 KiB anchored once, referenced 5,000 times: 1 GB if each reference were copied.
    let big = "x".repeat(200 * 1024);
    let refs = vec!["*big"; 5000].join(", ");
    let text = format!(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: a}}\nspec:\n  instructions: &big {big}\n  command: [{refs}]\n"
    );
    assert!(text.len() < MAX_MANIFEST_BYTES);
    let e = timed_err(&text);
    assert!(
        e.contains(
            "spec.command[0]: a string of 204800 bytes is longer than the limit of 131072 bytes"
        ),
        "{e}"
    );

    // Just under the per-argument limit: the total cap stops it instead.
    let big = "x".repeat(120 * 1024);
    let refs = vec!["*big"; 4000].join(", ");
    let text = format!(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: a}}\nspec:\n  instructions: &big {big}\n  command: [{refs}]\n"
    );
    let e = timed_err(&text);
    assert!(
        e.contains("spec.command: the list's strings add up to more than 1048576 bytes"),
        "{e}"
    );

    // Mount entries: every string inside is bounded too.
    let big = "x".repeat(300 * 1024);
    let mounts = vec!["{source: *big, path: /x}"; 200].join(", ");
    let text = format!(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: a}}\nspec:\n  instructions: &big {big}\n  capabilities: {{fs: {{mounts: [{mounts}]}}}}\n"
    );
    let e = timed_err(&text);
    assert!(e.contains("is longer than the limit of 4096 bytes"), "{e}");
}

#[test]
fn aliases_to_a_large_subtree_stay_fast() {
    // A mounts list of 256 entries anchored, then referenced many times where a list of
    // mounts is not expected.
    let entries = vec!["{name: v, path: /x}"; 256].join(", ");
    let refs = vec!["*m"; 2000].join(", ");
    let text = format!(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: a}}\nspec:\n  capabilities:\n    fs: {{mounts: &m [{entries}]}}\n    secrets: [{refs}]\n"
    );
    let e = timed_err(&text);
    assert!(
        e.contains("spec.capabilities.fs.mounts[1].path: /x is mounted more than once")
            || e.contains("invalid type: sequence"),
        "{e}"
    );
}

#[test]
fn too_many_list_entries() {
    let langs = vec!["python"; 33].join(", ");
    let e = timed_err(&with_spec(&format!(
        "  capabilities: {{exec: {{languages: [{langs}]}}}}\n"
    )));
    assert!(
        e.contains("spec.capabilities.exec.languages: the list has more than 32 entries"),
        "{e}"
    );

    let args = vec!["a"; 4097].join(", ");
    let e = timed_err(&format!(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: a}}\nspec:\n  command: [{args}]\n"
    ));
    assert!(
        e.contains("spec.command: the list has more than 4096 entries"),
        "{e}"
    );
    let args = vec!["a"; 4096].join(", ");
    assert!(parse_agent(&format!(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: a}}\nspec:\n  command: [{args}]\n"
    ))
    .is_ok());

    let mounts: Vec<String> = (0..257)
        .map(|i| format!("{{name: v, path: /m{i}}}"))
        .collect();
    let e = timed_err(&with_spec(&format!(
        "  capabilities: {{fs: {{mounts: [{}]}}}}\n",
        mounts.join(", ")
    )));
    assert!(
        e.contains("spec.capabilities.fs.mounts: the list has more than 256 entries"),
        "{e}"
    );

    let domains: Vec<String> = (0..1025).map(|i| format!("d{i}.example.com")).collect();
    let e = timed_err(&with_spec(&format!(
        "  capabilities: {{net: {{policy: restricted, allowlist: [{}]}}}}\n",
        domains.join(", ")
    )));
    assert!(
        e.contains("spec.capabilities.net.allowlist: the list has more than 1024 entries"),
        "{e}"
    );
}

#[test]
fn deep_nesting_is_refused() {
    for depth in [200, 10_000, 100_000] {
        let text = format!(
            "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: a}}\nspec:\n  command: {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let e = timed_err(&text);
        assert!(e.contains("line 5"), "{depth}: {e}");
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        timed_err(&text);
        let text = format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth));
        timed_err(&text);
        let text = format!("{}x", "- ".repeat(depth));
        timed_err(&text);
    }
}

#[test]
fn nul_bytes_and_control_characters() {
    // A raw NUL in the YAML text is refused by the YAML reader.
    let e =
        timed_err("apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: \"a\0\"}\nspec: {}\n");
    assert_eq!(e, "line 3, column 20: control characters are not allowed");
    let e = timed_err("apiVersion: spawn.dev/v1\0\nkind: Agent\n");
    assert_eq!(e, "line 1, column 25: control characters are not allowed");
    // An escaped NUL reaches the validator, which names the field.
    let e = timed_err(&with_spec("  instructions: \"hi\\0there\"\n"));
    assert_eq!(e, "spec.instructions: contains a NUL byte");
    let e =
        timed_err("apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: \"a\\0\"}\nspec: {}\n");
    assert!(
        e.starts_with("metadata.name: \"a\\0\" is not a DNS label"),
        "{e}"
    );
    let e = timed_err(&with_spec(
        "  capabilities: {fs: {mounts: [{source: ./d, path: \"/x\\0y\"}]}}\n",
    ));
    assert!(
        e.contains("spec.capabilities.fs.mounts[0].path: \"/x\\0y\" contains a NUL byte"),
        "{e}"
    );
}

#[test]
fn yaml_features_that_could_smuggle_fields() {
    // Merge keys are not applied: `<<` is just an unknown field.
    let e = timed_err(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nbase: &b {command: [x]}\nspec:\n  <<: *b\n",
    );
    assert!(e.contains("unknown field"), "{e}");
    // Duplicate keys are refused rather than last-one-wins.
    let e = timed_err(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec:\n  command: [x]\n  command: [y]\n",
    );
    assert!(e.contains("duplicate"), "{e}");
    // An alias to an undefined anchor.
    let e = timed_err("apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: *nope\nspec: {}\n");
    assert!(e.contains("line 3"), "{e}");
    // Tags do not change what a field holds.
    let text = with_spec("  sandbox: {resources: {pids: !!str 12}}\n");
    if let Ok(agent) = parse_agent(&text) {
        let resources = agent.spec.sandbox.unwrap().resources.unwrap();
        assert_eq!(resources.pids, Some(12));
    }
}

#[test]
fn long_values_produce_short_messages() {
    let long = "A".repeat(100_000);
    let e = timed_err(&format!(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: {long}}}\nspec: {{}}\n"
    ));
    assert!(e.len() < 400, "{} bytes: {}", e.len(), &e[..200]);
    assert!(e.contains("(100000 bytes)"), "{e}");
}

#[test]
fn deeply_nested_flow_collections_are_refused_quickly() {
    // Each of these took from seconds to minutes inside the YAML scanner before the cap.
    let max = MAX_MANIFEST_BYTES;
    for unit in ["{a: ", "[{a: ", "[a: ", "[", "{", "{a:\n"] {
        let text = unit.repeat(max / unit.len());
        let e = timed_err(&text);
        assert!(
            e.contains("more than 512 '[' and '{' characters outside comments"),
            "{unit:?}: {e}"
        );
    }
    // At the cap, the worst shapes still finish quickly.
    for (open, fill) in [("{a: ", "a, "), ("[a: ", "a, "), ("[{a: ", "a: b, ")] {
        let mut text = open.repeat(512);
        while text.len() + fill.len() < max {
            text.push_str(fill);
        }
        timed_err_within(&text, SLOW);
    }
    // The position of the first bracket over the limit is reported.
    let text = format!("{}\n  {}", "[".repeat(400), "{".repeat(200));
    assert!(timed_err(&text).starts_with("line 2, column 115: "));
}

#[test]
fn brackets_on_comment_lines_do_not_count_but_hidden_line_breaks_do() {
    let comment = format!("# {}\n", "[".repeat(600));
    let text = format!("{comment}{MINIMAL}  # {}\n", "{".repeat(600));
    assert!(parse_agent(&text).is_ok());
    // A line break libyaml honours (U+2028) ends the "comment line": what follows counts.
    let text = format!("{MINIMAL}# x\u{2028}{}\n", "[".repeat(600));
    assert!(timed_err(&text).contains("more than 512"));
    let text = format!("{MINIMAL}# x\r{}\n", "[".repeat(600));
    assert!(timed_err(&text).contains("more than 512"));
    // Brackets in a block scalar count (libyaml decides what is a block scalar).
    let text = with_spec(&format!("  instructions: |\n    {}\n", "[".repeat(513)));
    assert!(timed_err(&text).contains("more than 512"));
    let text = with_spec(&format!("  instructions: |\n    {}\n", "[]".repeat(500)));
    assert!(parse_agent(&text).is_ok());
}

#[test]
fn messages_cannot_carry_terminal_escapes_or_floods() {
    let e = timed_err(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec: {\"\\e[2J\\u0007\": 1}\n",
    );
    assert!(!e.chars().any(char::is_control), "{e:?}");
    assert!(e.contains("unknown field `\\u{1b}[2J\\u{7}`"), "{e}");
    let key = "k".repeat(500_000);
    let e = timed_err(&format!(
        "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata: {{name: a}}\nspec: {{{key}: 1}}\n"
    ));
    assert!(e.len() < 1100, "{} bytes", e.len());
    assert!(e.ends_with("..."));
    let e = timed_err(&with_spec(
        "  capabilities: {fs: {mounts: [{name: a, path: \"/x\\e[2J\"}, {name: b, path: \"/x\\e[2J\"}]}}\n",
    ));
    assert!(!e.chars().any(char::is_control), "{e:?}");
}

#[test]
fn crlf_line_endings_keep_positions_right() {
    let text = "apiVersion: spawn.dev/v1\r\nkind: Agent\r\nmetadata: {name: a}\r\nspec:\r\n  comand: [x]\r\n";
    assert!(timed_err(text).starts_with("line 5, column 3: spec: unknown field `comand`"));
    let text = format!("# c\r\n{}", "[".repeat(600));
    assert!(timed_err(&text).starts_with("line 2, column 513: "));
}
