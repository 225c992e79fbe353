//! Arbitrary text as a bootstrap (YAML, then JSON): parsing and conversion return errors and
//! never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skiff_proxy::config::{Bootstrap, Format, Schema};

static SCHEMA: OnceLock<Schema> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let schema = SCHEMA.get_or_init(Schema::load);
    let _ = Bootstrap::from_text(schema, text, Format::Yaml);
    let _ = Bootstrap::from_text(schema, text, Format::Json);
});
