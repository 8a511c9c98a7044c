//! Role and RoleBinding documents as `spawn apply` and the API receive them, arbitrary
//! bytes: no panic; whatever is accepted has valid names, known verbs and resources within
//! the limits, and every split document parses the same alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spawn_auth::rbac::{self, Document, MAX_ENTRIES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (line, doc) in rbac::split_documents(text) {
        assert!(line >= 1);
        match rbac::parse_document(&doc) {
            Ok(Document::Role(r)) => {
                assert!(spawn_policy::check_dns_label(&r.name).is_ok());
                assert!(spawn_policy::check_dns_label(&r.namespace).is_ok());
                assert!(rbac::BuiltinRole::parse(&r.name).is_none());
                assert!(r.rules.len() <= MAX_ENTRIES);
                for rule in &r.rules {
                    assert!(!rule.verbs.is_empty() && !rule.resources.is_empty());
                }
            }
            Ok(Document::RoleBinding(b)) => {
                assert!(!b.subjects.is_empty() && b.subjects.len() <= MAX_ENTRIES);
                for s in &b.subjects {
                    assert!(rbac::check_principal(&s.name).is_ok());
                }
                assert!(spawn_policy::check_dns_label(&b.role).is_ok());
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
