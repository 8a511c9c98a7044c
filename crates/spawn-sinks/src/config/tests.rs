use super::*;

/// Read as spawnd reads `spawn.yaml` (each case is in YAML's JSON-like flow style).
fn specs(yaml: &str) -> Result<Vec<SinkSpec>, String> {
    serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
}

fn check(json: &str) -> Result<Vec<SinkPlan>, String> {
    let specs = specs(json)?;
    plan(&specs, Path::new("/var/spawn/audit")).map_err(|e| e.to_string())
}

#[test]
fn hostile_values_are_refused_with_the_reason() {
    for (json, says) in [
        // Names: they become file names.
        (r#"[{"name":"../x","type":"file","path":"/t/a"}]"#, "name"),
        (r#"[{"name":"a/b","type":"file","path":"/t/a"}]"#, "name"),
        (r#"[{"name":"","type":"file","path":"/t/a"}]"#, "name"),
        (
            r#"[{"name":".hidden","type":"file","path":"/t/a"}]"#,
            "name",
        ),
        (r#"[{"name":"-x","type":"file","path":"/t/a"}]"#, "name"),
        (r#"[{"name":"UPPER","type":"file","path":"/t/a"}]"#, "name"),
        (
            r#"[{"name":"a\u0000b","type":"file","path":"/t/a"}]"#,
            "name",
        ),
        (r#"[{"name":"a b","type":"file","path":"/t/a"}]"#, "name"),
        (r#"[{"name":"é","type":"file","path":"/t/a"}]"#, "name"),
        (
            &format!(
                r#"[{{"name":"{}","type":"file","path":"/t/a"}}]"#,
                "a".repeat(65)
            ),
            "name",
        ),
        (
            r#"[{"name":"a","type":"file","path":"/t/a"},{"name":"a","type":"file","path":"/t/b"}]"#,
            "used by another sink",
        ),
        // Unknown fields and types, options of another type.
        (
            r#"[{"name":"a","type":"file","path":"/t/a","colour":1}]"#,
            "colour",
        ),
        (r#"[{"name":"a","type":"kafka"}]"#, "kafka"),
        (
            r#"[{"name":"a","type":"file","path":"/t/a","format":"cef"}]"#,
            "cef",
        ),
        (
            r#"[{"name":"a","type":"file","path":"/t/a","url":"http://x"}]"#,
            "url is not an option of a file sink",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"h:514","maxBytes":5000}]"#,
            "maxBytes is not an option of a syslog sink",
        ),
        // Files.
        (r#"[{"name":"a","type":"file"}]"#, "needs path"),
        (r#"[{"name":"a","type":"file","path":"rel/a"}]"#, "absolute"),
        (
            r#"[{"name":"a","type":"file","path":"/t/../etc/passwd"}]"#,
            "absolute",
        ),
        (r#"[{"name":"a","type":"file","path":"/t/"}]"#, "absolute"),
        (
            r#"[{"name":"a","type":"file","path":"/var/spawn/audit/audit.jsonl"}]"#,
            "inside the audit directory",
        ),
        (
            r#"[{"name":"a","type":"file","path":"/t/a","maxBytes":100}]"#,
            "maxBytes",
        ),
        (
            r#"[{"name":"a","type":"file","path":"/t/a","keep":0}]"#,
            "keep",
        ),
        (
            r#"[{"name":"a","type":"file","path":"/t/a","keep":-1}]"#,
            "keep",
        ),
        (
            r#"[{"name":"a","type":"file","path":"/t/a"},{"name":"b","type":"file","path":"/t/a"}]"#,
            "written by another sink",
        ),
        (
            r#"[{"name":"a","type":"file","path":"/t/a","batchSize":0}]"#,
            "batchSize",
        ),
        (
            r#"[{"name":"a","type":"file","path":"/t/a","retryMaxSeconds":0}]"#,
            "retryMaxSeconds",
        ),
        // Syslog.
        (
            r#"[{"name":"a","type":"syslog","address":"h:514"}]"#,
            "transport",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"quic","address":"h:514"}]"#,
            "quic",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp"}]"#,
            "needs address",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"h"}]"#,
            "address",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"h:0"}]"#,
            "address",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"h:65536"}]"#,
            "address",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"h:+514"}]"#,
            "address",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":":514"}]"#,
            "address",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"h h:514"}]"#,
            "address",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"::1:514"}]"#,
            "address",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"[zz]:514"}]"#,
            "address",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"h\n:514"}]"#,
            "address",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"-h:514"}]"#,
            "address",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"h:514","facility":"local9"}]"#,
            "facility",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"h:514","hostname":"a b"}]"#,
            "hostname",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"h:514","maxMessageBytes":100}]"#,
            "maxMessageBytes",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"udp","address":"h:514","ca":"/ca.pem"}]"#,
            "for transport tls",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"tls","address":"h:6514"}]"#,
            "needs ca",
        ),
        (
            r#"[{"name":"a","type":"syslog","transport":"tls","address":"h:6514","ca":"/c","serverName":"a b"}]"#,
            "serverName",
        ),
        // Webhooks and OTLP.
        (r#"[{"name":"a","type":"webhook"}]"#, "needs url"),
        (
            r#"[{"name":"a","type":"webhook","url":"ftp://h/x"}]"#,
            "http:// or https://",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"file:///etc/passwd"}]"#,
            "URL",
        ),
        (r#"[{"name":"a","type":"webhook","url":"h/x"}]"#, "URL"),
        (
            r#"[{"name":"a","type":"webhook","url":"http://user:pw@h/x"}]"#,
            "credentials",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h/x#frag"}]"#,
            "fragment",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h/a b"}]"#,
            "spaces",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h\r\nX: y/"}]"#,
            "control",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h:0/"}]"#,
            "port 0",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h_h/"}]"#,
            "host",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http:///x"}]"#,
            "URL",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h/","ca":"/ca"}]"#,
            "for https",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h/","timeoutSeconds":0}]"#,
            "timeoutSeconds",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h/","source":""}]"#,
            "source",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h/","headers":{"Authorization":"Bearer abc"}}]"#,
            "not an environment variable name",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h/","headers":{"Authorization":"1TOKEN"}}]"#,
            "not an environment variable name",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h/","headers":{"Bad Header":"T"}}]"#,
            "header",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h/","headers":{"X\nY":"T"}}]"#,
            "header",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h/","headers":{"Host":"T"}}]"#,
            "may set",
        ),
        (
            r#"[{"name":"a","type":"webhook","url":"http://h/","headers":{"content-type":"T"}}]"#,
            "may set",
        ),
        (
            r#"[{"name":"a","type":"otlp","url":"http://h/"}]"#,
            "url is not an option of a otlp sink",
        ),
        (
            r#"[{"name":"a","type":"otlp","endpoint":"http://h/?x=1"}]"#,
            "query",
        ),
        (r#"[{"name":"a","type":"otlp"}]"#, "needs endpoint"),
    ] {
        let err = check(json).expect_err(json);
        assert!(err.contains(says), "{json}: {err}");
    }
}

#[test]
fn secrets_in_the_file_are_never_echoed() {
    // A value put where an environment variable's name goes is not repeated whole.
    let secret = "Bearer sk-0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    let json = format!(
        r#"[{{"name":"a","type":"webhook","url":"http://h/","headers":{{"Authorization":"{secret}"}}}}]"#
    );
    let err = check(&json).unwrap_err();
    assert!(!err.contains(secret), "{err}");
}

#[test]
fn good_sinks_make_their_plans() {
    let plans = check(
        r#"[
        {"name":"local","type":"file","path":"/var/log/spawn/audit.jsonl","maxBytes":1048576,"keep":3},
        {"name":"siem_1","type":"syslog","transport":"tls","address":"logs.example.com:6514","ca":"/etc/ca.pem","facility":"local3"},
        {"name":"udp","type":"syslog","transport":"udp","address":"[::1]:514","format":"ocsf"},
        {"name":"hook","type":"webhook","url":"https://hooks.example.com/spawn?tenant=1","headers":{"Authorization":"SPAWN_HOOK_TOKEN"},"source":"spawnd://prod-1"},
        {"name":"otel","type":"otlp","endpoint":"http://127.0.0.1:4318/"}
    ]"#,
    )
    .unwrap();
    assert_eq!(plans.len(), 5);
    assert_eq!(
        plans[0].target,
        Target::File(FileOptions {
            path: "/var/log/spawn/audit.jsonl".into(),
            max_bytes: 1 << 20,
            keep: 3
        })
    );
    let Target::Syslog(s) = &plans[1].target else {
        panic!("{:?}", plans[1]);
    };
    assert_eq!(s.facility, 19);
    assert_eq!(s.server_name.as_deref(), Some("logs.example.com"));
    assert_eq!(s.max_message_bytes, 256 * 1024);
    let Target::Syslog(s) = &plans[2].target else {
        panic!("{:?}", plans[2]);
    };
    assert_eq!((s.facility, s.max_message_bytes), (10, 2048));
    assert_eq!(plans[2].format, Format::Ocsf);
    let Target::Webhook(h) = &plans[3].target else {
        panic!("{:?}", plans[3]);
    };
    assert_eq!(h.ca, Path::new(SYSTEM_CA_BUNDLE));
    assert_eq!(
        h.headers,
        vec![("Authorization".to_owned(), "SPAWN_HOOK_TOKEN".to_owned())]
    );
    let Target::Otlp(o) = &plans[4].target else {
        panic!("{:?}", plans[4]);
    };
    assert_eq!(o.url.to_string(), "http://127.0.0.1:4318/v1/logs");
    assert_eq!(plans[4].batch_size, 100);
    assert_eq!(plans[4].retry_max, Duration::from_secs(60));
}
