//! Loading from files: formats by extension, image files resolved relative to the workflow
//! file, unreadable files and images reported.

mod common;

use std::fs;
use std::path::Path;

use common::{find, show};
use gleitzeit_core::{
    load_file, load_file_with_input, load_str, Action, ErrorKind, Format, Limits,
};
use serde_json::{json, Map};

const PNG_BYTES: &[u8] = b"\x89PNG\r\n\x1a\nnot really a png";

fn vision(images: &str) -> String {
    format!("name: v\ntasks:\n  - name: Look\n    type: vision\n    model: llava\n    prompt: What is it?\n    images: {images}\n")
}

fn images_of(wf: &gleitzeit_core::Workflow) -> Vec<String> {
    match &wf.tasks[0].action {
        Action::Vision { images, .. } => images.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn image_paths_resolve_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("img")).unwrap();
    fs::write(dir.path().join("img/cat.png"), PNG_BYTES).unwrap();
    let abs = dir.path().join("abs.png");
    fs::write(&abs, b"abs").unwrap();
    let file = dir.path().join("wf.yaml");
    fs::write(
        &file,
        vision(&format!(
            "[img/cat.png, '{}', aGk=, '{{{{input}}}}']",
            abs.display()
        )),
    )
    .unwrap();
    let wf = load_file(&file, &Limits::default()).unwrap_or_else(|e| panic!("{}", show(&e)));
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        images_of(&wf),
        vec![
            b64.encode(PNG_BYTES),
            b64.encode(b"abs"),
            "aGk=".into(),
            "{{input}}".into()
        ]
    );
}

#[test]
fn missing_and_unreadable_images_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("folder.png")).unwrap();
    let file = dir.path().join("wf.yml");
    fs::write(&file, vision("[missing/cat.png, folder.png, '!!!']")).unwrap();
    let errs = load_file(&file, &Limits::default()).unwrap_err();
    let e = find(
        &errs,
        ErrorKind::UnreadableImage,
        "tasks[0] (Look).images[0]",
    );
    assert!(e.message.contains("missing/cat.png"), "{e}");
    find(
        &errs,
        ErrorKind::UnreadableImage,
        "tasks[0] (Look).images[1]",
    );
    find(&errs, ErrorKind::InvalidBase64, "tasks[0] (Look).images[2]");
    assert_eq!(errs.len(), 3, "no double report as base64: {}", show(&errs));
}

#[test]
fn image_files_larger_than_a_task_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("big.png"), vec![0u8; 3000]).unwrap();
    let file = dir.path().join("wf.yaml");
    fs::write(&file, vision("[big.png]")).unwrap();
    let limits = Limits {
        max_task_bytes: 2000,
        ..Limits::default()
    };
    let errs = load_file(&file, &limits).unwrap_err();
    find(&errs, ErrorKind::TaskTooLarge, "tasks[0] (Look).images[0]");
    assert_eq!(errs.len(), 1, "{}", show(&errs));
}

#[test]
fn without_a_base_directory_paths_are_not_read() {
    let errs = load_str(
        &vision("[Cargo.toml]"),
        Format::Yaml,
        None,
        &Map::new(),
        &Limits::default(),
    )
    .unwrap_err();
    find(&errs, ErrorKind::InvalidBase64, "tasks[0] (Look).images[0]");
}

#[test]
fn format_follows_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let json =
        r#"{"name": "j", "tasks": [{"name": "A", "type": "text", "model": "m", "prompt": "p"}]}"#;
    let jf = dir.path().join("wf.json");
    fs::write(&jf, json).unwrap();
    assert_eq!(load_file(&jf, &Limits::default()).unwrap().name, "j");
    // YAML content in a .json file is a JSON syntax error.
    let bad = dir.path().join("yaml.json");
    fs::write(&bad, "name: j\ntasks: []\n").unwrap();
    let errs = load_file(&bad, &Limits::default()).unwrap_err();
    assert_eq!(errs[0].kind, ErrorKind::Syntax);
    assert!(errs[0].message.starts_with("invalid JSON"), "{}", errs[0]);
    // Unknown extensions detect the format from the content.
    let any = dir.path().join("wf.workflow");
    fs::write(&any, json).unwrap();
    assert_eq!(load_file(&any, &Limits::default()).unwrap().name, "j");
}

#[test]
fn unreadable_workflow_files() {
    let errs = load_file(Path::new("/nonexistent/wf.yaml"), &Limits::default()).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].kind, ErrorKind::UnreadableFile);
    assert_eq!(errs[0].path, "/nonexistent/wf.yaml");
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin.yaml");
    fs::write(&bin, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let errs = load_file(&bin, &Limits::default()).unwrap_err();
    assert_eq!(errs[0].kind, ErrorKind::UnreadableFile);
}

#[test]
fn oversized_files_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.yaml");
    fs::write(
        &f,
        format!("name: big\ndescription: {}\ntasks: []\n", "x".repeat(200)),
    )
    .unwrap();
    let limits = Limits {
        max_workflow_bytes: 100,
        ..Limits::default()
    };
    let errs = load_file(&f, &limits).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].kind, ErrorKind::WorkflowTooLarge);
}

#[test]
fn overrides_through_load_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("wf.yaml");
    fs::write(&f, "name: o\ninput: { q: a }\ntasks:\n  - { name: A, type: text, model: m, prompt: '{{input.q}}' }\n").unwrap();
    let mut over = Map::new();
    over.insert("q".into(), json!("b"));
    let wf = load_file_with_input(&f, &over, &Limits::default()).unwrap();
    assert_eq!(wf.input["q"], json!("b"));
}
