//! `spawn validate -f` on good and hostile manifests, and `spawn run -f` of a real one.

use std::time::Duration;

use pretty_assertions::assert_eq;

use super::helpers::{tempdir, write_file, Home, Output};

const HEADER: &str = "apiVersion: spawn.dev/v1\nkind: Agent\nmetadata:\n  name: demo\n";

/// `spawn validate -f` of `text` written to a fresh directory.
fn validate(home: &Home, text: &str) -> Output {
    let dir = tempdir("spawn-validate-");
    let file = write_file(dir.path(), "agent.yaml", text);
    let file = file.to_string_lossy().into_owned();
    home.cmd(["validate", "-f", &file]).run()
}

/// Fails unless validation failed (exit 1) with a message containing each of `needles`.
fn assert_invalid(out: &Output, needles: &[&str]) {
    out.assert_code(1);
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "the error does not mention {needle:?}:\n{out}"
        );
    }
    assert!(
        out.elapsed < Duration::from_secs(5),
        "validation took {:?}:\n{out}",
        out.elapsed
    );
}

#[test]
fn good_manifest_is_valid() {
    let home = Home::new();
    let out = validate(
        &home,
        &format!(
            "{HEADER}spec:\n  command: [\"python3\", \"/workspace/main.py\"]\n  sandbox:\n    runtime: native\n    \
             resources: {{ cpu: \"1\", memory: 512Mi, pids: 128, disk: 1Gi }}\n    timeout: 10m\n  \
             capabilities:\n    fs:\n      mounts:\n        - {{ source: ./data, path: /data, mode: ro }}\n"
        ),
    );
    out.assert_code(0);
    assert!(out.stdout.contains("valid Agent default/demo"), "\n{out}");
}

#[test]
fn unknown_field_is_reported_with_line_and_column() {
    let home = Home::new();
    let out = validate(
        &home,
        &format!("{HEADER}spec:\n  command: [\"true\"]\n  sandbox:\n    runtme: native\n"),
    );
    assert_invalid(&out, &["runtme", "line 8", "column"]);
}

#[test]
fn huge_quantity_is_refused() {
    let home = Home::new();
    let out = validate(
        &home,
        &format!("{HEADER}spec:\n  command: [\"true\"]\n  sandbox:\n    resources: {{ memory: 99999999999999999999999999Ei }}\n"),
    );
    assert_invalid(&out, &["memory"]);
    let out = validate(
        &home,
        &format!("{HEADER}spec:\n  command: [\"true\"]\n  sandbox:\n    resources: {{ pids: 99999999999999999999999999 }}\n"),
    );
    assert_invalid(&out, &["pids"]);
}

#[test]
fn wrong_type_is_refused() {
    let home = Home::new();
    let out = validate(
        &home,
        &format!(
            "{HEADER}spec:\n  command: [\"true\"]\n  sandbox:\n    resources: {{ pids: lots }}\n"
        ),
    );
    assert_invalid(&out, &["line", "column"]);
    let out = validate(&home, &format!("{HEADER}spec:\n  command: \"true\"\n"));
    assert_invalid(&out, &["line", "column"]);
}

#[test]
fn mount_source_traversal_is_refused() {
    let home = Home::new();
    let text = format!(
        "{HEADER}spec:\n  command: [\"cat\", \"/data/shadow\"]\n  sandbox:\n    runtime: native\n  \
         capabilities:\n    fs:\n      mounts:\n        - {{ source: ../../etc, path: /data, mode: ro }}\n"
    );
    let out = validate(&home, &text);
    assert_invalid(&out, &["../../etc"]);
    // And running it is refused before anything starts.
    let dir = tempdir("spawn-traversal-");
    let sub = dir.path().join("a").join("b");
    std::fs::create_dir_all(&sub).expect("mkdir");
    let file = write_file(&sub, "agent.yaml", &text);
    let file = file.to_string_lossy().into_owned();
    let out = home.cmd(["run", "-f", &file, "--json"]).run();
    out.assert_code(125);
    assert!(out.stderr.contains("escapes"), "\n{out}");
}

#[test]
fn mount_path_traversal_is_refused() {
    let home = Home::new();
    let data = tempdir("spawn-data-");
    let out = validate(
        &home,
        &format!(
            "{HEADER}spec:\n  command: [\"true\"]\n  capabilities:\n    fs:\n      mounts:\n        \
             - {{ source: {}, path: /workspace/../proc, mode: rw }}\n",
            data.path().display()
        ),
    );
    assert_invalid(&out, &["/workspace/../proc"]);
}

#[test]
fn two_megabyte_manifest_is_refused() {
    let home = Home::new();
    let mut text = format!("{HEADER}spec:\n  command: [\"true\"]\n");
    while text.len() < 2 << 20 {
        text.push_str(
            "# padding padding padding padding padding padding padding padding padding\n",
        );
    }
    let out = validate(&home, &text);
    assert_invalid(&out, &["larger than"]);
}

#[test]
fn run_from_manifest_resolves_relative_mounts_against_its_directory() {
    let home = Home::new();
    let project = tempdir("spawn-project-");
    let data = project.path().join("data");
    std::fs::create_dir(&data).expect("mkdir data");
    write_file(&data, "hello.txt", "hello from the host\n");
    // The agent (an unprivileged host uid) must be able to read the files.
    for path in [project.path(), data.as_path()] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let manifest = write_file(
        project.path(),
        "agent.yaml",
        &format!(
            "{HEADER}spec:\n  command: [\"cat\", \"/data/hello.txt\"]\n  \
             sandbox:\n    runtime: native\n    resources: {{ cpu: \"1\", memory: 256Mi, pids: 64, disk: 64Mi }}\n    timeout: 30s\n  \
             capabilities:\n    fs:\n      mounts:\n        - {{ source: ./data, path: /data, mode: ro }}\n"
        ),
    );
    let elsewhere = tempdir("spawn-cwd-");
    let manifest = manifest.to_string_lossy().into_owned();
    let out = home
        .cmd(["run", "-f", &manifest, "--json"])
        .current_dir(elsewhere.path())
        .run();
    out.assert_code(0);
    assert_eq!(out.body(), "hello from the host", "\n{out}");
    assert_eq!(out.json()["runtime"], "native", "\n{out}");
    // A relative -f from the manifest directory's parent: ./data is still beside the manifest.
    let parent = project.path().parent().expect("a parent directory");
    let relative = project
        .path()
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned()
        + "/agent.yaml";
    let out = home
        .cmd(["run", "-f", &relative, "--json"])
        .current_dir(parent)
        .run();
    out.assert_code(0);
    assert_eq!(out.body(), "hello from the host", "\n{out}");
}
