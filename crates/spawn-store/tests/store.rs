//! The store's contract, run against both databases: every case below runs once on SQLite
//! and once on a real PostgreSQL server (see `common`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::Db;
use spawn_store::{now_ms, EndedRun, NewKey, NewRun, RunState, Store, StoreError};

/// Each case, as a test on each database.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::common::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::common::postgres().await).await
                }
            )*
        }
    };
}

on_both!(
    keys_are_found_by_hash_touched_sparingly_and_revoked_for_every_daemon,
    objects_are_versioned_and_a_stale_write_is_a_conflict,
    bindings_are_found_by_subject_and_follow_their_updates,
    lists_come_in_pages_in_a_stable_order,
    hostile_names_are_stored_as_written,
    each_queued_run_is_claimed_by_exactly_one_daemon,
    a_namespace_at_its_cap_waits_and_the_others_go_on,
    daemons_claiming_at_once_never_pass_a_namespaces_cap,
    a_holder_that_stops_renewing_has_its_runs_interrupted_never_rerun,
    runs_end_once_and_only_by_their_holder,
    cancelling_a_queued_run_ends_it_and_a_running_one_is_asked_to_stop,
    stopping_an_agent_cancels_its_live_runs_only,
    output_is_numbered_and_readable_from_any_daemon,
    opening_again_migrates_nothing_and_keeps_everything,
    an_ended_run_is_recorded_once_with_its_id_and_times,
);

fn key(n: u8, test: bool) -> NewKey {
    NewKey {
        hash: [n; 32],
        hint: format!("spawn_sk_live_…{n:02}"),
        test,
        principal_kind: "ServiceAccount".into(),
        principal_name: format!("ci-{n}"),
        created_by: "admin".into(),
        namespace: if n.is_multiple_of(2) {
            "even".into()
        } else {
            "odd".into()
        },
    }
}

async fn keys_are_found_by_hash_touched_sparingly_and_revoked_for_every_daemon(db: Db) {
    let s = &db.store;
    let a = s.insert_key(&key(1, false)).await.unwrap();
    let b = s.insert_key(&key(2, true)).await.unwrap();
    assert!(a.id.starts_with("key_") && a.id != b.id);
    assert_eq!(s.key_by_hash(&[1; 32]).await.unwrap().unwrap(), a);
    assert!(s.key_by_hash(&[9; 32]).await.unwrap().is_none());
    assert!(s.key_by_hash(&[2; 32]).await.unwrap().unwrap().test);
    // The same hash twice is refused by the database.
    assert!(s.insert_key(&key(1, false)).await.is_err());

    // last_used: written on first use, then not again within the resolution.
    let t0 = now_ms();
    s.touch_key(&a.id, t0).await.unwrap();
    assert_eq!(s.key(&a.id).await.unwrap().last_used_ms, Some(t0));
    s.touch_key(&a.id, t0 + 1000).await.unwrap();
    assert_eq!(s.key(&a.id).await.unwrap().last_used_ms, Some(t0));
    s.touch_key(&a.id, t0 + 61_000).await.unwrap();
    assert_eq!(s.key(&a.id).await.unwrap().last_used_ms, Some(t0 + 61_000));

    // Revoked through one daemon, seen revoked by another at its next lookup.
    let other = db.reopen().await;
    assert!(other
        .key_by_hash(&[1; 32])
        .await
        .unwrap()
        .unwrap()
        .revoked_ms
        .is_none());
    let revoked = s.revoke_key(&a.id).await.unwrap();
    let first = revoked.revoked_ms.unwrap();
    assert_eq!(
        other
            .key_by_hash(&[1; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked_ms,
        Some(first)
    );
    // Revoking again keeps the first time.
    assert_eq!(s.revoke_key(&a.id).await.unwrap().revoked_ms, Some(first));
    assert!(matches!(
        s.revoke_key("key_nonexistent").await,
        Err(StoreError::NotFound { .. })
    ));

    let odd = s.list_keys("odd", None, 10).await.unwrap();
    assert_eq!(
        odd.items.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        vec![a.id.as_str()]
    );
    let even = s.list_keys("even", None, 10).await.unwrap();
    assert_eq!(even.items, vec![s.key(&b.id).await.unwrap()]);
    assert!(s
        .list_keys("none", None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(s.principal_known("ServiceAccount", "ci-2").await.unwrap());
    assert!(!s.principal_known("User", "ci-2").await.unwrap());
    assert!(!s.principal_known("ServiceAccount", "nobody").await.unwrap());
}

async fn objects_are_versioned_and_a_stale_write_is_a_conflict(db: Db) {
    let s = &db.store;
    let r = s
        .put_role("prod", "ops", r#"[{"resources":["agents"]}]"#, false, None)
        .await
        .unwrap();
    assert_eq!(r.version, 1);
    assert!(matches!(
        s.put_role("prod", "ops", "[]", false, None).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let r2 = s
        .put_role("prod", "ops", "[1]", false, Some(1))
        .await
        .unwrap();
    assert_eq!((r2.version, r2.rules.as_str()), (2, "[1]"));
    // A writer still at version 1 loses, and learns the current version.
    match s.put_role("prod", "ops", "[2]", false, Some(1)).await {
        Err(StoreError::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (1, 2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.role("prod", "ops").await.unwrap().rules, "[1]");
    assert!(matches!(
        s.put_role("prod", "nope", "[]", false, Some(1)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete_role("prod", "ops", Some(1)).await,
        Err(StoreError::Conflict { .. })
    ));
    s.delete_role("prod", "ops", Some(2)).await.unwrap();
    assert!(matches!(
        s.role("prod", "ops").await,
        Err(StoreError::NotFound { .. })
    ));

    // Agents: the id stays with the agent across updates; namespaces are apart.
    let a = s.put_agent("dev", "bot", "{}", None).await.unwrap();
    let a2 = s
        .put_agent("dev", "bot", r#"{"x":1}"#, Some(1))
        .await
        .unwrap();
    assert_eq!(a.id, a2.id);
    assert!(a.id.starts_with("ag_"));
    let other_ns = s.put_agent("prod", "bot", "{}", None).await.unwrap();
    assert_ne!(other_ns.id, a.id);
    assert!(matches!(
        s.put_agent("dev", "bot", "{}", Some(1)).await,
        Err(StoreError::Conflict { .. })
    ));
    s.delete_agent("dev", "bot", None).await.unwrap();
    assert!(s.agent("dev", "bot").await.is_err());
    assert_eq!(s.agent("prod", "bot").await.unwrap(), other_ns);
}

async fn bindings_are_found_by_subject_and_follow_their_updates(db: Db) {
    let s = &db.store;
    let alice = ("User".to_owned(), "alice@company.com".to_owned());
    let bob = ("User".to_owned(), "bob".to_owned());
    let ci = ("ServiceAccount".to_owned(), "ci".to_owned());
    s.put_binding(
        "prod",
        "ops",
        "agent-operator",
        "[a,c]",
        &[alice.clone(), ci.clone()],
        None,
    )
    .await
    .unwrap();
    s.put_binding(
        "dev",
        "devs",
        "developer",
        "[a]",
        std::slice::from_ref(&alice),
        None,
    )
    .await
    .unwrap();
    // A key's grants come with it, in one read; a principal named only in a binding is
    // known.
    assert!(s
        .principal_known("User", "alice@company.com")
        .await
        .unwrap());
    s.insert_key(&NewKey {
        hash: [42; 32],
        hint: "h".into(),
        test: false,
        principal_kind: "User".into(),
        principal_name: "alice@company.com".into(),
        created_by: "t".into(),
        namespace: "prod".into(),
    })
    .await
    .unwrap();
    let (k, mut grants) = s.key_with_grants(&[42; 32]).await.unwrap().unwrap();
    grants.sort();
    assert_eq!(k.principal_name, "alice@company.com");
    assert_eq!(
        grants,
        vec![
            ("dev".to_owned(), "developer".to_owned()),
            ("prod".to_owned(), "agent-operator".to_owned())
        ]
    );
    assert!(s.key_with_grants(&[43; 32]).await.unwrap().is_none());
    let of_alice = s.bindings_of("User", "alice@company.com").await.unwrap();
    assert_eq!(
        of_alice
            .iter()
            .map(|b| (b.namespace.as_str(), b.name.as_str(), b.role.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("dev", "devs", "developer"),
            ("prod", "ops", "agent-operator")
        ]
    );
    // A kind is part of the subject: a ServiceAccount named like a User is someone else.
    assert!(s
        .bindings_of("ServiceAccount", "alice@company.com")
        .await
        .unwrap()
        .is_empty());

    // Alice removed from ops, Bob added: the lookup follows at once.
    s.put_binding(
        "prod",
        "ops",
        "agent-operator",
        "[b,c]",
        &[bob.clone(), ci.clone()],
        Some(1),
    )
    .await
    .unwrap();
    assert_eq!(
        s.bindings_of("User", "alice@company.com")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.bindings_of("User", "bob").await.unwrap().len(), 1);
    // A stale update changes neither the binding nor its subjects.
    assert!(matches!(
        s.put_binding(
            "prod",
            "ops",
            "admin",
            "[a]",
            std::slice::from_ref(&alice),
            Some(1)
        )
        .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        s.binding("prod", "ops").await.unwrap().role,
        "agent-operator"
    );
    assert_eq!(
        s.bindings_of("User", "alice@company.com")
            .await
            .unwrap()
            .len(),
        1
    );
    // Deleted: its subjects go with it.
    s.delete_binding("prod", "ops", None).await.unwrap();
    assert!(s.bindings_of("User", "bob").await.unwrap().is_empty());
    assert!(s
        .bindings_of("ServiceAccount", "ci")
        .await
        .unwrap()
        .is_empty());
}

async fn lists_come_in_pages_in_a_stable_order(db: Db) {
    let s = &db.store;
    for i in (0..7).rev() {
        s.put_agent("ns", &format!("agent-{i}"), "{}", None)
            .await
            .unwrap();
    }
    s.put_agent("other", "agent-x", "{}", None).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.list_agents("ns", after.as_deref(), 3).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|a| a.name.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..7).map(|i| format!("agent-{i}")).collect::<Vec<_>>()
    );
    // Runs: newest first, across pages, none twice.
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(s.create_run(&run("ns")).await.unwrap().id);
    }
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = s.list_runs("ns", None, after.as_deref(), 2).await.unwrap();
        listed.extend(page.items.iter().map(|r| r.id.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    // Same-millisecond runs are ordered by id: compare as sets, then the times' order.
    assert_eq!(
        listed.iter().collect::<HashSet<_>>(),
        expected.iter().collect::<HashSet<_>>()
    );
    assert_eq!(listed.len(), 5);
    let times: Vec<i64> = {
        let mut t = Vec::new();
        for id in &listed {
            t.push(s.run(id).await.unwrap().created_ms);
        }
        t
    };
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
}

async fn hostile_names_are_stored_as_written(db: Db) {
    let s = &db.store;
    for name in [
        "x'; DROP TABLE agents; --",
        "\" OR 1=1 --",
        "名前",
        "a\u{202e}b",
        "%_",
        "back\\slash",
        "$1",
    ] {
        let a = s.put_agent("ns", name, "{}", None).await.unwrap();
        assert_eq!(s.agent("ns", name).await.unwrap(), a);
    }
    // The `%_` name is no pattern: nothing else matched it.
    assert_eq!(s.list_agents("ns", None, 100).await.unwrap().items.len(), 7);
    assert!(s.agent("ns", "%").await.is_err());
}

fn run(ns: &str) -> NewRun {
    NewRun {
        namespace: ns.into(),
        agent_id: None,
        spec: r#"{"command":["true"]}"#.into(),
        created_by: "ci".into(),
        request_id: Some("req_test".into()),
    }
}

async fn each_queued_run_is_claimed_by_exactly_one_daemon(db: Db) {
    const RUNS: usize = 200;
    for _ in 0..RUNS {
        db.store.create_run(&run("ns")).await.unwrap();
    }
    // Four daemons, each with its own connections, claiming in small batches at once.
    let mut tasks = Vec::new();
    for d in 0..4 {
        let store = db.reopen().await;
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_runs(&format!("daemon-{d}"), now_ms() + 60_000, 7)
                    .await
                    .unwrap();
                if got.is_empty() {
                    break;
                }
                for r in &got {
                    assert_eq!(r.state().unwrap(), RunState::Running);
                    assert_eq!(r.holder.as_deref(), Some(format!("daemon-{d}").as_str()));
                }
                mine.extend(got.into_iter().map(|r| r.id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    let mut per_daemon = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        per_daemon.push(mine.len());
        all.extend(mine);
    }
    common::note(&format!("claims per daemon: {per_daemon:?}"));
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), RUNS, "claimed {} times", all.len());
    assert_eq!(unique.len(), RUNS);
    assert!(db
        .store
        .claim_runs("late", now_ms() + 1, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.store.count_runs_by_state().await.unwrap(),
        vec![("running".to_owned(), i64::try_from(RUNS).unwrap())]
    );
}

async fn a_namespace_at_its_cap_waits_and_the_others_go_on(db: Db) {
    let s = &db.store;
    for _ in 0..3 {
        s.create_run(&run("busy")).await.unwrap();
    }
    let quiet = s.create_run(&run("quiet")).await.unwrap();
    let until = now_ms() + 60_000;
    let first = s.claim_runs_capped("a", until, 10, 2).await.unwrap();
    // Two of `busy` (its cap), and `quiet`'s one, though it was queued last.
    let mut by_ns: Vec<&str> = first.iter().map(|r| r.namespace.as_str()).collect();
    by_ns.sort_unstable();
    assert_eq!(by_ns, vec!["busy", "busy", "quiet"]);
    assert!(first.iter().any(|r| r.id == quiet.id));
    assert!(s
        .claim_runs_capped("b", until, 10, 2)
        .await
        .unwrap()
        .is_empty());
    // One of `busy` ends: its third may go.
    let busy = first.iter().find(|r| r.namespace == "busy").unwrap();
    s.finish_run(&busy.id, "a", RunState::Succeeded, Some(0), None)
        .await
        .unwrap();
    let next = s.claim_runs_capped("b", until, 10, 2).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].namespace, "busy");
}

/// Four daemons, each with its own connections, claim from one namespace at the same
/// moment, round after round, its cap one: however their claims interleave, never more
/// than one of its runs is running.
async fn daemons_claiming_at_once_never_pass_a_namespaces_cap(db: Db) {
    const ROUNDS: usize = 40;
    const DAEMONS: usize = 4;
    // Each round: the test queues runs, the daemons claim at once, the test counts, the
    // daemons end what they claimed, the test removes what is left queued.
    let step = std::sync::Arc::new(tokio::sync::Barrier::new(DAEMONS + 1));
    let mut tasks = Vec::new();
    for d in 0..DAEMONS {
        let store = db.reopen().await;
        let step = step.clone();
        tasks.push(tokio::spawn(async move {
            let holder = format!("daemon-{d}");
            for _ in 0..ROUNDS {
                step.wait().await;
                let got = store
                    .claim_runs_capped(&holder, now_ms() + 60_000, 1, 1)
                    .await
                    .unwrap();
                step.wait().await;
                step.wait().await;
                for r in got {
                    store
                        .finish_run(&r.id, &holder, RunState::Succeeded, Some(0), None)
                        .await
                        .unwrap();
                }
                step.wait().await;
            }
        }));
    }
    let running = || async {
        db.store
            .count_runs_by_state()
            .await
            .unwrap()
            .into_iter()
            .find(|(s, _)| s == "running")
            .map_or(0, |(_, n)| n)
    };
    let mut per_round = Vec::new();
    for _ in 0..ROUNDS {
        for _ in 0..DAEMONS {
            db.store.create_run(&run("ns")).await.unwrap();
        }
        step.wait().await;
        step.wait().await;
        per_round.push(running().await);
        step.wait().await;
        step.wait().await;
        for r in db
            .store
            .claim_runs("sweeper", now_ms() + 60_000, 100)
            .await
            .unwrap()
        {
            db.store
                .finish_run(&r.id, "sweeper", RunState::Cancelled, None, None)
                .await
                .unwrap();
        }
        assert_eq!(running().await, 0);
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        per_round.iter().all(|n| *n == 1),
        "runs of the namespace running after each round of claims (cap 1): {per_round:?}"
    );
}

async fn a_holder_that_stops_renewing_has_its_runs_interrupted_never_rerun(db: Db) {
    let s = &db.store;
    for _ in 0..4 {
        s.create_run(&run("ns")).await.unwrap();
    }
    let now = now_ms();
    let a = s.claim_runs("a", now + 1_000, 2).await.unwrap();
    let b = s.claim_runs("b", now + 1_000, 2).await.unwrap();
    assert_eq!((a.len(), b.len()), (2, 2));
    // b renews; a does not.
    assert_eq!(s.renew_leases("b", now + 60_000).await.unwrap(), 2);
    let interrupted = s.interrupt_expired(now + 2_000).await.unwrap();
    let a_ids: HashSet<_> = a.iter().map(|r| r.id.clone()).collect();
    assert_eq!(interrupted.into_iter().collect::<HashSet<_>>(), a_ids);
    for r in &a {
        let r = s.run(&r.id).await.unwrap();
        assert_eq!(r.state().unwrap(), RunState::Interrupted);
        assert!(r.error.unwrap().contains("lease"));
    }
    for r in &b {
        assert_eq!(
            s.run(&r.id).await.unwrap().state().unwrap(),
            RunState::Running
        );
    }
    // Nobody claims an interrupted run again, and its old holder cannot finish it.
    assert!(s
        .claim_runs("c", now + 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.finish_run(&a[0].id, "a", RunState::Succeeded, Some(0), None)
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    assert_eq!(s.renew_leases("a", now + 60_000).await.unwrap(), 0);
    assert!(!s.renew_lease(&a[0].id, "a", now + 60_000).await.unwrap());
    assert!(s.renew_lease(&b[0].id, "b", now + 90_000).await.unwrap());
    assert!(!s.renew_lease(&b[0].id, "a", now + 90_000).await.unwrap());
    assert_eq!(
        s.run(&b[0].id).await.unwrap().lease_until_ms,
        Some(now + 90_000)
    );
}

async fn runs_end_once_and_only_by_their_holder(db: Db) {
    let s = &db.store;
    let r = s.create_run(&run("ns")).await.unwrap();
    assert_eq!(r.state().unwrap(), RunState::Queued);
    assert_eq!(r.request_id.as_deref(), Some("req_test"));
    let claimed = s.claim_runs("a", now_ms() + 60_000, 1).await.unwrap();
    assert_eq!(claimed[0].id, r.id);
    assert!(matches!(
        s.finish_run(&r.id, "b", RunState::Succeeded, Some(0), None)
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    // Not a way to end a run.
    assert!(s
        .finish_run(&r.id, "a", RunState::Running, None, None)
        .await
        .is_err());
    assert!(s
        .finish_run(&r.id, "a", RunState::Interrupted, None, None)
        .await
        .is_err());
    let done = s
        .finish_run(&r.id, "a", RunState::Failed, Some(3), Some("exit 3"))
        .await
        .unwrap();
    assert_eq!(done.state().unwrap(), RunState::Failed);
    assert_eq!(done.exit_code, Some(3));
    assert!(done.finished_ms.is_some() && done.lease_until_ms.is_none());
    // Once.
    assert!(s
        .finish_run(&r.id, "a", RunState::Succeeded, Some(0), None)
        .await
        .is_err());
    assert_eq!(s.run(&r.id).await.unwrap().exit_code, Some(3));
}

async fn cancelling_a_queued_run_ends_it_and_a_running_one_is_asked_to_stop(db: Db) {
    let s = &db.store;
    let queued = s.create_run(&run("ns")).await.unwrap();
    let cancelled = s.cancel_run(&queued.id).await.unwrap();
    assert_eq!(cancelled.state().unwrap(), RunState::Cancelled);
    assert!(cancelled.finished_ms.is_some());
    assert!(s
        .claim_runs("a", now_ms() + 60_000, 10)
        .await
        .unwrap()
        .is_empty());

    let running = s.create_run(&run("ns")).await.unwrap();
    s.claim_runs("a", now_ms() + 60_000, 10).await.unwrap();
    let asked = s.cancel_run(&running.id).await.unwrap();
    assert_eq!(asked.state().unwrap(), RunState::Running);
    assert!(asked.cancel_requested);
    let ended = s
        .finish_run(&running.id, "a", RunState::Cancelled, None, None)
        .await
        .unwrap();
    assert_eq!(ended.state().unwrap(), RunState::Cancelled);
    // A finished run stays as it ended.
    assert_eq!(
        s.cancel_run(&running.id).await.unwrap().state().unwrap(),
        RunState::Cancelled
    );
    assert!(matches!(
        s.cancel_run("tr_nonexistent").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn stopping_an_agent_cancels_its_live_runs_only(db: Db) {
    let s = &db.store;
    let of = |ns: &str, agent: &str| NewRun {
        agent_id: Some(agent.into()),
        ..run(ns)
    };
    // Of ag_a in ns: one finished, one running, one queued. Others: ag_b in ns, ag_a's
    // id in another namespace, a bare command in ns.
    let done = s.create_run(&of("ns", "ag_a")).await.unwrap();
    s.claim_runs("h", now_ms() + 60_000, 10).await.unwrap();
    s.finish_run(&done.id, "h", RunState::Succeeded, Some(0), None)
        .await
        .unwrap();
    let running = s.create_run(&of("ns", "ag_a")).await.unwrap();
    s.claim_runs("h", now_ms() + 60_000, 10).await.unwrap();
    let queued = s.create_run(&of("ns", "ag_a")).await.unwrap();
    let others = [
        s.create_run(&of("ns", "ag_b")).await.unwrap(),
        s.create_run(&of("other", "ag_a")).await.unwrap(),
        s.create_run(&run("ns")).await.unwrap(),
    ];

    let stopped = s.cancel_agent_runs("ns", "ag_a").await.unwrap();
    let mut ids: Vec<&str> = stopped.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    let mut want = [running.id.as_str(), queued.id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    for r in &stopped {
        assert!(r.cancel_requested);
        let state = if r.id == running.id {
            RunState::Running
        } else {
            RunState::Cancelled
        };
        assert_eq!(r.state().unwrap(), state);
    }
    assert_eq!(
        s.run(&done.id).await.unwrap().state().unwrap(),
        RunState::Succeeded
    );
    assert!(!s.run(&done.id).await.unwrap().cancel_requested);
    for o in &others {
        let o = s.run(&o.id).await.unwrap();
        assert_eq!(o.state().unwrap(), RunState::Queued, "{}", o.id);
        assert!(!o.cancel_requested);
    }
    // Nothing left to stop: an empty answer, not an error.
    let again = s.cancel_agent_runs("ns", "ag_a").await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "the running one is still running until its holder ends it"
    );
    assert!(s
        .cancel_agent_runs("ns", "ag_none")
        .await
        .unwrap()
        .is_empty());
}

async fn output_is_numbered_and_readable_from_any_daemon(db: Db) {
    let s = &db.store;
    let r = s.create_run(&run("ns")).await.unwrap();
    let binary: Vec<u8> = (0..=255u8).collect();
    let mut chunks = vec![
        ("stdout", b"line 1\n".to_vec()),
        ("stderr", b"warning\n".to_vec()),
        ("stdout", binary),
        ("stdout", Vec::new()),
    ];
    for i in 0..50 {
        chunks.push(("stdout", format!("{i}\n").into_bytes()));
    }
    for (i, (stream, data)) in chunks.iter().enumerate() {
        let seq = s.append_output(&r.id, stream, data).await.unwrap();
        assert_eq!(seq, i64::try_from(i).unwrap() + 1);
    }
    let other = db.reopen().await;
    let all = other.output(&r.id, 0, 1000).await.unwrap();
    assert_eq!(all.len(), chunks.len());
    for (got, (stream, data)) in all.iter().zip(&chunks) {
        assert_eq!((got.stream.as_str(), &got.data), (*stream, data));
    }
    // Resuming after an event id (SSE's Last-Event-ID) gives exactly what followed it.
    let rest = other.output(&r.id, 3, 2).await.unwrap();
    assert_eq!(rest.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert!(other.output(&r.id, 1000, 10).await.unwrap().is_empty());
    assert!(other.output("tr_other", 0, 10).await.unwrap().is_empty());
}

async fn opening_again_migrates_nothing_and_keeps_everything(db: Db) {
    let a = db.store.put_agent("ns", "keep", "{}", None).await.unwrap();
    db.store.close().await;
    let again: Store = db.reopen().await;
    assert_eq!(again.agent("ns", "keep").await.unwrap(), a);
    again.ping().await.unwrap();
    // A daemon's supervisor attaches to the schema its daemon brought up to date: it
    // reads and writes as the daemon does.
    let attached = Store::attach(&db.url).await.unwrap();
    assert_eq!(attached.agent("ns", "keep").await.unwrap(), a);
    let r = attached.create_run(&run("ns")).await.unwrap();
    assert_eq!(again.run(&r.id).await.unwrap().id, r.id);
}

#[tokio::test]
async fn the_sqlite_file_is_the_owners_alone_and_a_foreign_file_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("home/spawn.db");
    let store = Store::open_home(&dir.path().join("home")).await.unwrap();
    store.ping().await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let garbage = dir.path().join("garbage.db");
    std::fs::write(
        &garbage,
        b"this is not a database, just text that is long enough",
    )
    .unwrap();
    let err = Store::open(&garbage.to_string_lossy())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("database"), "{err}");
}

async fn an_ended_run_is_recorded_once_with_its_id_and_times(db: Db) {
    let s = &db.store;
    let t = now_ms();
    let run = EndedRun {
        id: "tr_local1".into(),
        namespace: "local".into(),
        agent_id: None,
        spec: r#"{"command":["false"]}"#.into(),
        state: RunState::Failed,
        exit_code: Some(1),
        error: None,
        created_by: "User/alice".into(),
        created_ms: t,
        started_ms: Some(t + 1),
        finished_ms: t + 5,
    };
    s.record_ended_run(&run).await.unwrap();
    let r = s.run("tr_local1").await.unwrap();
    assert_eq!(
        (
            r.state.as_str(),
            r.exit_code,
            r.holder.as_deref(),
            r.cancel_requested
        ),
        ("failed", Some(1), None, false)
    );
    assert_eq!(
        (r.created_ms, r.started_ms, r.finished_ms),
        (t, Some(t + 1), Some(t + 5))
    );
    assert_eq!(r.created_by, "User/alice");
    let page = s.list_runs("local", None, None, 10).await.unwrap();
    assert_eq!(page.items, vec![r.clone()]);
    // The same id twice is an error, not a second row; a live state is no end.
    assert!(s.record_ended_run(&run).await.is_err());
    for state in [RunState::Running, RunState::Queued, RunState::Interrupted] {
        let live = EndedRun {
            id: "tr_local2".into(),
            state,
            ..run.clone()
        };
        assert!(s.record_ended_run(&live).await.is_err());
    }
    assert!(matches!(
        s.run("tr_local2").await,
        Err(StoreError::NotFound { .. })
    ));
    // Nothing claims or interrupts it.
    assert!(s
        .claim_runs("d1", now_ms() + 1000, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(s.interrupt_expired(i64::MAX).await.unwrap().is_empty());
}
