//! Every trigger file in `docs/triggers.md` (a ` ```toml trigger ` block)
//! parses and validates, so a reader who copies one succeeds. The CLI's
//! doc test checks plain ` ```toml ` blocks as job files and leaves these
//! to this test.

use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};
use shoal_trigger::TriggerSpec;

fn blocks(text: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String, usize)> = None;
    for (event, range) in Parser::new(text).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                let line = text[..range.start].matches('\n').count() + 1;
                current = Some((info.to_string(), String::new(), line));
            }
            Event::Text(t) => {
                if let Some(b) = current.as_mut() {
                    b.1.push_str(&t);
                }
            }
            Event::End(TagEnd::CodeBlock) => out.extend(current.take()),
            _ => {}
        }
    }
    out
}

#[test]
fn trigger_files_in_the_docs_validate() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/triggers.md");
    let text = std::fs::read_to_string(path).expect("docs/triggers.md");
    let mut checked = 0;
    let mut failures = Vec::new();
    for (info, body, line) in blocks(&text) {
        let words: Vec<&str> = info.split_whitespace().collect();
        if words.first() != Some(&"toml") {
            continue;
        }
        assert_eq!(
            words,
            ["toml", "trigger"],
            "docs/triggers.md:{line}: a TOML block here is a trigger file: mark it ```toml trigger"
        );
        checked += 1;
        if let Err(e) = TriggerSpec::from_toml(&body) {
            failures.push(format!("docs/triggers.md:{line}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 5, "only {checked} trigger files found");
}
