#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// The built-in roles' permissions, written out: one line per role and resource, the
/// verbs in the order get list create update delete start stop (`x` allowed, `.` denied).
const MATRIX: &str = "
admin     agents        xxxxxxx
admin     agents/logs   xxxxxxx
admin     runs          xxxxxxx
admin     secrets       xxxxxxx
admin     keys          xxxxxxx
admin     roles         xxxxxxx
admin     rolebindings  xxxxxxx
admin     audit         xxxxxxx
operator  agents        xxxxxxx
operator  agents/logs   xx.....
operator  runs          xxxxxxx
operator  secrets       .......
operator  keys          .......
operator  roles         .......
operator  rolebindings  .......
operator  audit         .......
developer agents        xxxx.xx
developer agents/logs   xx.....
developer runs          xxx...x
developer secrets       .......
developer keys          .......
developer roles         .......
developer rolebindings  .......
developer audit         .......
viewer    agents        xx.....
viewer    agents/logs   xx.....
viewer    runs          xx.....
viewer    secrets       .......
viewer    keys          .......
viewer    roles         xx.....
viewer    rolebindings  xx.....
viewer    audit         .......
auditor   agents        .......
auditor   agents/logs   xx.....
auditor   runs          xx.....
auditor   secrets       .......
auditor   keys          .......
auditor   roles         .......
auditor   rolebindings  .......
auditor   audit         xx.....
";

fn binding(ns: &str, role: &str, who: &str) -> RoleBinding {
    RoleBinding {
        namespace: ns.into(),
        name: format!("{role}-{who}"),
        role: role.into(),
        subjects: vec![Subject {
            kind: SubjectKind::User,
            name: who.into(),
        }],
    }
}

#[test]
fn every_builtin_role_verb_and_resource_in_and_out_of_its_namespace() {
    let mut rows = 0;
    for line in MATRIX.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [role, resource, verbs] = cols[..] else {
            panic!("bad matrix line {line:?}")
        };
        let role = BuiltinRole::parse(role).unwrap();
        let resource = Resource::parse(resource).unwrap();
        // Bound in `team`: what the table says there, nothing in `other`.
        let bindings = [binding("team", role.name(), "alice")];
        let in_ns = permissions_in(&bindings, "team", |_, _| None);
        let out_ns = permissions_in(&bindings, "other", |_, _| None);
        for (verb, mark) in Verb::ALL.into_iter().zip(verbs.chars()) {
            let want = mark == 'x';
            assert_eq!(
                in_ns.allows(resource, verb),
                want,
                "{} {} {} in its namespace",
                role.name(),
                verb.as_str(),
                resource.as_str()
            );
            assert!(
                !out_ns.allows(resource, verb),
                "{} {} {} outside its namespace",
                role.name(),
                verb.as_str(),
                resource.as_str()
            );
        }
        rows += 1;
    }
    assert_eq!(rows, BuiltinRole::ALL.len() * Resource::ALL.len());
}

#[test]
fn nothing_is_allowed_without_a_binding_and_star_bindings_hold_everywhere() {
    let none: [RoleBinding; 0] = [];
    assert!(permissions_in(&none, "default", |_, _| None).is_empty());
    let admin = [binding(ALL_NAMESPACES, "admin", "root")];
    for ns in ["default", "prod", "anything"] {
        assert_eq!(permissions_in(&admin, ns, |_, _| None), Permissions::all());
    }
    // A binding to a Role that does not exist grants nothing.
    let dangling = [binding("prod", "gone", "bob")];
    assert!(permissions_in(&dangling, "prod", |_, _| None).is_empty());
}

/// Seed 001's example, exactly as written there.
const SEED_EXAMPLE: &str = "# roles.yaml
apiVersion: spawn.dev/v1
kind: Role
metadata:
  name: agent-operator
  namespace: production
rules:
  - resources: [agents]
    verbs: [get, list, create, start, stop]
  - resources: [agents/logs]
    verbs: [get]
  - resources: [tasks]
    verbs: [get, list, create]
---
apiVersion: spawn.dev/v1
kind: RoleBinding
metadata:
  name: alice-operator
  namespace: production
subjects:
  - kind: User
    name: alice@company.com
roleRef:
  kind: Role
  name: agent-operator
";

#[test]
fn the_seed_example_applies_as_written() {
    let docs = split_documents(SEED_EXAMPLE);
    assert_eq!(
        docs.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        vec![1, 15]
    );
    let Document::Role(role) = parse_document(&docs[0].1).unwrap() else {
        panic!("not a Role")
    };
    let Document::RoleBinding(b) = parse_document(&docs[1].1).unwrap() else {
        panic!("not a RoleBinding")
    };
    assert_eq!(
        (role.namespace.as_str(), role.name.as_str()),
        ("production", "agent-operator")
    );
    assert_eq!(b.role, "agent-operator");
    assert_eq!(
        b.subjects,
        vec![Subject {
            kind: SubjectKind::User,
            name: "alice@company.com".into()
        }]
    );
    let p = permissions_in(&[b], "production", |ns, name| {
        (ns == "production" && name == "agent-operator").then(|| role.clone())
    });
    use Resource::*;
    use Verb::*;
    for (r, v, want) in [
        (Agents, Start, true),
        (Agents, Delete, false),
        (AgentLogs, Get, true),
        (AgentLogs, List, false),
        (Runs, Create, true), // `tasks`
        (Runs, Stop, false),
        (Secrets, Get, false),
    ] {
        assert_eq!(p.allows(r, v), want, "{} {}", v.as_str(), r.as_str());
    }
}

#[test]
fn nobody_grants_what_they_do_not_hold() {
    let developer = BuiltinRole::Developer.permissions();
    // Within what it holds: allowed.
    check_grant(
        &developer,
        &Permissions::of(&[Resource::Agents], &[Verb::Get]),
    )
    .unwrap();
    check_grant(&developer, &Permissions::none()).unwrap();
    // Every built-in role beyond the holder's, for every holder.
    for holder in BuiltinRole::ALL {
        for granted in BuiltinRole::ALL {
            let ok = granted
                .permissions()
                .beyond(&holder.permissions())
                .is_empty();
            let got = check_grant(&holder.permissions(), &granted.permissions());
            assert_eq!(
                got.is_ok(),
                ok,
                "{} granting {}",
                holder.name(),
                granted.name()
            );
            if let Err(e) = got {
                assert!(e.to_string().contains("cannot grant"), "{e}");
            }
        }
    }
    // One permission more is enough to refuse, and it is named.
    let mut more = developer.clone();
    more.add(&Permissions::of(&[Resource::Secrets], &[Verb::Get]));
    let e = check_grant(&developer, &more).unwrap_err().to_string();
    assert!(e.contains("get secrets"), "{e}");
    // `*` grants all, so only an admin may write it.
    let star = "apiVersion: spawn.dev/v1\nkind: Role\nmetadata: {name: all, namespace: x}\nrules:\n  - {resources: ['*'], verbs: ['*']}\n";
    let Document::Role(r) = parse_document(star).unwrap() else {
        panic!()
    };
    assert_eq!(r.permissions(), Permissions::all());
    assert!(check_grant(&BuiltinRole::Operator.permissions(), &r.permissions()).is_err());
    check_grant(&BuiltinRole::Admin.permissions(), &r.permissions()).unwrap();
}

#[test]
fn hostile_documents_are_refused_with_the_reason() {
    let role = |body: &str| {
        format!(
            "apiVersion: spawn.dev/v1\nkind: Role\nmetadata: {{name: r, namespace: ns}}\n{body}"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (role("rules: [{resources: [agents], verbs: [get], extra: 1}]"), "extra"),
        (role("rules: [{resources: [agents], verbs: [get]}]\nspec: {}"), "spec"),
        (role("rules: [{resources: [agent], verbs: [get]}]"), "\"agent\" is not known"),
        (role("rules: [{resources: [agents], verbs: [GET]}]"), "\"GET\" is not known"),
        (role("rules: [{resources: [agents], verbs: [escalate]}]"), "not known"),
        (role("rules: [{resources: [agents], verbs: []}]"), "empty"),
        (role("rules: [{resources: [], verbs: [get]}]"), "empty"),
        (role("rules: [{resources: [agents/../secrets], verbs: [get]}]"), "not known"),
        (role("rules: [{resources: [\"agents\\u0000\"], verbs: [get]}]"), "not known"),
        (role("rules: {resources: [agents]}"), "line"),
        (
            "apiVersion: spawn.dev/v2\nkind: Role\nmetadata: {name: r}\nrules: []\n".into(),
            "apiVersion",
        ),
        ("apiVersion: spawn.dev/v1\nkind: Role\nmetadata: {name: Admin}\nrules: []\n".into(), "metadata.name"),
        ("apiVersion: spawn.dev/v1\nkind: Role\nmetadata: {name: admin}\nrules: []\n".into(), "built-in"),
        ("apiVersion: spawn.dev/v1\nkind: Role\nmetadata: {name: r, namespace: ../x}\nrules: []\n".into(), "metadata.namespace"),
        ("apiVersion: spawn.dev/v1\nkind: Role\nmetadata: {name: \"r\\u202e\"}\nrules: []\n".into(), "metadata.name"),
        ("apiVersion: spawn.dev/v1\nkind: ClusterRole\nmetadata: {name: r}\n".into(), "ClusterRole"),
        ("apiVersion: spawn.dev/v1\nmetadata: {name: r}\n".into(), "no kind"),
        ("- a\n- b\n".into(), "no kind"),
        ("kind: [Role]\n".into(), "no kind"),
        (
            "apiVersion: spawn.dev/v1\nkind: RoleBinding\nmetadata: {name: b}\nsubjects: [{kind: Group, name: devs}]\nroleRef: {kind: Role, name: r}\n".into(),
            "not User or ServiceAccount",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: RoleBinding\nmetadata: {name: b}\nsubjects: [{kind: User, name: \"a b\"}]\nroleRef: {kind: Role, name: r}\n".into(),
            "printable",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: RoleBinding\nmetadata: {name: b}\nsubjects: [{kind: User, name: \"al\\u200bice\"}]\nroleRef: {kind: Role, name: r}\n".into(),
            "printable",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: RoleBinding\nmetadata: {name: b}\nsubjects: [{kind: User, name: \"\"}]\nroleRef: {kind: Role, name: r}\n".into(),
            "1 to",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: RoleBinding\nmetadata: {name: b}\nsubjects: []\nroleRef: {kind: Role, name: r}\n".into(),
            "at least one",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: RoleBinding\nmetadata: {name: b}\nsubjects: [{kind: User, name: a}]\nroleRef: {kind: ClusterRole, name: r}\n".into(),
            "roleRef.kind",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: RoleBinding\nmetadata: {name: b}\nsubjects: [{kind: User, name: a}]\nroleRef: {kind: Role, name: ../r}\n".into(),
            "roleRef.name",
        ),
        (
            "apiVersion: spawn.dev/v1\nkind: RoleBinding\nmetadata: {name: b}\nsubjects: [{kind: User, name: a}]\n".into(),
            "roleRef",
        ),
        (format!("{}{}", role("rules: []\n"), "x".repeat(MAX_DOCUMENT_BYTES)), "bytes"),
        (
            role(&format!(
                "rules: [{}]",
                vec!["{resources: [agents], verbs: [get]}"; MAX_ENTRIES + 1].join(", ")
            )),
            "entries",
        ),
    ];
    for (doc, want) in cases {
        let err = parse_document(&doc).unwrap_err().to_string();
        assert!(
            err.contains(want),
            "{:?}: {err:?} does not say {want:?}",
            &doc[..doc.len().min(200)]
        );
    }
}

#[test]
fn errors_say_where() {
    let doc = "apiVersion: spawn.dev/v1\nkind: Role\nmetadata:\n  name: r\nrules:\n  - resources: [agents]\n    verbs: [get]\n    bogus: true\n";
    let err = parse_document(doc).unwrap_err().to_string();
    assert!(err.starts_with("line 8, column 5:"), "{err}");
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn documents_split_at_their_separators_only() {
    let text = "a: 1\n---\n\n---\nb: |\n  ---\n  x\n--- # c\nc: 3\n";
    let docs = split_documents(text);
    assert_eq!(
        docs.iter()
            .map(|(l, d)| (*l, d.trim().to_owned()))
            .collect::<Vec<_>>(),
        vec![
            (1, "a: 1".into()),
            (5, "b: |\n  ---\n  x".into()),
            (9, "c: 3".into())
        ]
    );
    assert!(split_documents("").is_empty());
    assert!(split_documents("---\n---\n").is_empty());
}

#[test]
fn names_of_verbs_resources_and_roles_read_back() {
    for v in Verb::ALL {
        assert_eq!(Verb::parse(v.as_str()), Some(v));
    }
    for r in Resource::ALL {
        assert_eq!(Resource::parse(r.as_str()), Some(r));
    }
    assert_eq!(Resource::parse("tasks"), Some(Resource::Runs));
    for b in BuiltinRole::ALL {
        assert_eq!(BuiltinRole::parse(b.name()), Some(b));
        let role = Role {
            namespace: "x".into(),
            name: "y".into(),
            rules: b.rules(),
        };
        assert_eq!(role.permissions(), b.permissions());
    }
}
