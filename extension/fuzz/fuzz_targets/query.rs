//! Every query parser of the localhost API on arbitrary text: never a panic, and a request
//! that parses keeps within the documented bounds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lockbox_extension::http::api::MAX_BATCH;
use lockbox_extension::http::query as request;

fuzz_target!(|data: &[u8]| {
    // The server hands the handlers the raw query as text; the URI parser has made it ASCII.
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = request::parse_parameter(Some(query)) {
        assert!(!req.name.is_empty());
        assert!(req.name.len() <= 2048);
    }
    if let Ok(req) = request::parse_secret(Some(query)) {
        assert!(!req.secret_id.is_empty());
    }
    if let Ok(req) = request::parse_parameters(Some(query)) {
        assert!(!req.names.is_empty() && req.names.len() <= MAX_BATCH);
    }
    if let Ok(req) = request::parse_path(Some(query)) {
        assert!(req.path.starts_with('/'));
    }
    if let Ok(req) = request::parse_secrets(Some(query)) {
        assert!(!req.ids.is_empty() && req.ids.len() <= MAX_BATCH);
    }
});
