//! Template forms, single-pass rendering, typed substitution and `Task::render`.

mod common;

use std::collections::HashMap;

use common::valid;
use gleitzeit_core::{
    references, render_str, render_value, Action, ChatMessage, Reference, RenderContext, Role,
    TemplateError,
};
use serde_json::{json, Map, Value};

fn input() -> Map<String, Value> {
    json!({
        "text": "Gleitzeit runs LLM workflows",
        "n": 3,
        "user": { "name": "Ada", "langs": ["en", "de"] },
        "flag": true
    })
    .as_object()
    .cloned()
    .unwrap()
}

fn results() -> HashMap<String, Value> {
    HashMap::from([
        ("Summarize".to_owned(), json!("A short summary.")),
        ("Extract key points".to_owned(), json!("point one")),
        (
            "Obj".to_owned(),
            json!({ "title": "T", "tags": ["a", "b"], "n": 7, "nested": { "x": null } }),
        ),
        (
            "JsonText".to_owned(),
            json!("{\"title\": \"From text\", \"score\": 0.5}"),
        ),
        ("ListText".to_owned(), json!("[10, 20]")),
        ("Num".to_owned(), json!(42)),
        (
            "Sneaky".to_owned(),
            json!("{{Summarize.result}} and {{input.text}}"),
        ),
        ("Vec".to_owned(), json!([0.25, -1.0])),
    ])
}

fn render(s: &str) -> Result<String, TemplateError> {
    let (i, r) = (input(), results());
    render_str(
        s,
        &RenderContext {
            input: &i,
            results: &r,
        },
    )
}

fn render_v(v: Value) -> Result<Value, TemplateError> {
    let (i, r) = (input(), results());
    render_value(
        &v,
        &RenderContext {
            input: &i,
            results: &r,
        },
    )
}

#[test]
fn input_forms() {
    assert_eq!(
        render("{{input.text}}").unwrap(),
        "Gleitzeit runs LLM workflows"
    );
    assert_eq!(
        render("n={{input.n}} flag={{input.flag}}").unwrap(),
        "n=3 flag=true"
    );
    assert_eq!(render("{{input.user.name}}").unwrap(), "Ada");
    assert_eq!(render("{{input.user.langs}}").unwrap(), r#"["en","de"]"#);
    assert_eq!(render("{{input.user.langs.1}}").unwrap(), "de");
    let whole: Value = serde_json::from_str(&render("{{input}}").unwrap()).unwrap();
    assert_eq!(whole, Value::Object(input()));
    assert!(!render("{{input}}").unwrap().contains('\n'), "compact JSON");
}

#[test]
fn result_forms() {
    assert_eq!(
        render("S: {{Summarize.result}}").unwrap(),
        "S: A short summary."
    );
    assert_eq!(
        render("{{Extract key points.result}}").unwrap(),
        "point one"
    );
    assert_eq!(render("{{Obj.result.title}}").unwrap(), "T");
    assert_eq!(render("{{Obj.result.tags}}").unwrap(), r#"["a","b"]"#);
    assert_eq!(render("{{Obj.result.tags.0}}").unwrap(), "a");
    assert_eq!(render("{{Obj.result.n}}").unwrap(), "7");
    assert_eq!(render("{{Obj.result.nested.x}}").unwrap(), "null");
    let whole = render("{{Obj.result}}").unwrap();
    assert!(!whole.contains(' '), "compact JSON: {whole}");
    assert_eq!(
        serde_json::from_str::<Value>(&whole).unwrap(),
        results()["Obj"]
    );
    assert_eq!(render("{{Num.result}}").unwrap(), "42");
    assert_eq!(render("{{Vec.result}}").unwrap(), "[0.25,-1.0]");
}

#[test]
fn field_access_into_json_text_results() {
    assert_eq!(render("{{JsonText.result.title}}").unwrap(), "From text");
    assert_eq!(render("{{JsonText.result.score}}").unwrap(), "0.5");
    assert_eq!(render("{{ListText.result.1}}").unwrap(), "20");
    // The whole string result stays the text it is.
    assert_eq!(
        render("{{JsonText.result}}").unwrap(),
        "{\"title\": \"From text\", \"score\": 0.5}"
    );
    assert_eq!(
        render("{{Summarize.result.title}}"),
        Err(TemplateError::MissingField {
            task: "Summarize".into(),
            field: "title".into(),
            reference: "Summarize.result.title".into()
        })
    );
}

#[test]
fn whitespace_inside_braces() {
    assert_eq!(
        render("{{ input.text }}").unwrap(),
        "Gleitzeit runs LLM workflows"
    );
    assert_eq!(
        render("{{\tSummarize.result\n}}").unwrap(),
        "A short summary."
    );
    assert_eq!(
        render("{{ Summarize . result }}").unwrap(),
        "A short summary."
    );
    assert_eq!(
        render("{{  Extract key points.result  }}").unwrap(),
        "point one"
    );
}

#[test]
fn substitution_happens_once() {
    // A result containing template syntax arrives literally.
    assert_eq!(
        render("<{{Sneaky.result}}>").unwrap(),
        "<{{Summarize.result}} and {{input.text}}>"
    );
    assert_eq!(
        render_v(json!("{{Sneaky.result}}")).unwrap(),
        json!("{{Summarize.result}} and {{input.text}}")
    );
}

#[test]
fn literal_braces() {
    assert_eq!(render(r#"{{ "{{" }}x}}"#).unwrap(), "{{x}}");
    assert_eq!(render(r#"{{"{{"}}input.text}}"#).unwrap(), "{{input.text}}");
    assert_eq!(render(r#"a {{ "}}" }} b"#).unwrap(), "a }} b");
    assert_eq!(render(r#"{{""}}"#).unwrap(), "");
    // Lone closing braces and single braces are plain text.
    assert_eq!(
        render("JSON: {\"a\": {\"b\": 1}}").unwrap(),
        "JSON: {\"a\": {\"b\": 1}}"
    );
    assert_eq!(render("}} {").unwrap(), "}} {");
    assert_eq!(render_v(json!(r#"{{ "{{" }}"#)).unwrap(), json!("{{"));
}

#[test]
fn text_without_templates_is_unchanged() {
    for s in ["", "plain", "ünïcödé ✓", "a { b } c"] {
        assert_eq!(render(s).unwrap(), s);
    }
}

#[test]
fn runtime_errors() {
    assert_eq!(
        render("{{Nobody.result}}"),
        Err(TemplateError::MissingResult {
            task: "Nobody".into(),
            reference: "Nobody.result".into()
        })
    );
    assert_eq!(
        render("{{input.missing}}"),
        Err(TemplateError::UnknownInput {
            reference: "input.missing".into()
        })
    );
    assert_eq!(
        render("{{input.user.name.first}}"),
        Err(TemplateError::UnknownInput {
            reference: "input.user.name.first".into()
        })
    );
    assert_eq!(
        render("{{Obj.result.tags.9}}"),
        Err(TemplateError::MissingField {
            task: "Obj".into(),
            field: "tags.9".into(),
            reference: "Obj.result.tags.9".into()
        })
    );
    match render("ok {{ broken") {
        Err(TemplateError::Malformed { offset, .. }) => assert_eq!(offset, 3),
        other => panic!("{other:?}"),
    }
    let e = render("{{Nobody.result}}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "template `{{Nobody.result}}`: no result of task \"Nobody\" is available"
    );
}

#[test]
fn render_value_keeps_types_for_whole_templates() {
    assert_eq!(render_v(json!("{{input.n}}")).unwrap(), json!(3));
    assert_eq!(render_v(json!("{{input.flag}}")).unwrap(), json!(true));
    assert_eq!(
        render_v(json!("{{input.user}}")).unwrap(),
        json!({ "name": "Ada", "langs": ["en", "de"] })
    );
    assert_eq!(
        render_v(json!("{{input}}")).unwrap(),
        Value::Object(input())
    );
    assert_eq!(
        render_v(json!("{{Obj.result.tags}}")).unwrap(),
        json!(["a", "b"])
    );
    assert_eq!(
        render_v(json!("{{Vec.result}}")).unwrap(),
        json!([0.25, -1.0])
    );
    assert_eq!(
        render_v(json!("{{JsonText.result.score}}")).unwrap(),
        json!(0.5)
    );
    // A string result stays a string even when it looks like JSON.
    assert_eq!(
        render_v(json!("{{ListText.result}}")).unwrap(),
        json!("[10, 20]")
    );
    // Anything around the template makes it interpolation.
    assert_eq!(render_v(json!("n={{input.n}}")).unwrap(), json!("n=3"));
    assert_eq!(render_v(json!(" {{input.n}}")).unwrap(), json!(" 3"));
    assert_eq!(
        render_v(json!("{{input.n}}{{input.n}}")).unwrap(),
        json!("33")
    );
}

#[test]
fn render_value_recurses_and_leaves_other_leaves() {
    let v = json!({
        "list": ["{{Num.result}}", 1, null, { "deep": "x {{Summarize.result}}" }],
        "plain": 2.5,
        "b": false
    });
    assert_eq!(
        render_v(v).unwrap(),
        json!({
            "list": [42, 1, null, { "deep": "x A short summary." }],
            "plain": 2.5,
            "b": false
        })
    );
    assert!(render_v(json!(["{{Nobody.result}}"])).is_err());
}

const TASKS: &str = r#"
name: t
input: { text: hello, n: 2 }
defaults: { model: m }
tasks:
  - name: Summarize
    type: text
    prompt: "S {{input.text}}"
  - name: Obj
    type: text
    prompt: p
  - name: Write
    type: text
    system: "sys {{input.text}}"
    prompt: "{{Summarize.result}} / {{Obj.result.title}}"
  - name: Talk
    type: chat
    system: "chat sys {{Summarize.result}}"
    messages:
      - { role: system, content: "be {{input.text}}" }
      - { role: user, content: "hi {{Summarize.result}}" }
  - name: Look
    type: vision
    prompt: "look {{input.n}}"
    images: ["aGk=", "{{Obj.result.tags.0}}"]
  - name: Vector
    type: embed
    prompt: "embed {{Summarize.result}}"
  - name: Process
    type: external
    service: Python Tasks
    function: process_data
    args: ["{{Summarize.result}}", "{{input.n}}", 3, ["{{Obj.result.tags}}"]]
    kwargs: { mode: fast, data: "{{input}}", n: "n={{input.n}}" }
"#;

#[test]
fn task_render_covers_every_templated_field() {
    let wf = valid(TASKS);
    let r = results();
    let ctx = RenderContext {
        input: &wf.input,
        results: &r,
    };
    let out: Vec<_> = wf.tasks.iter().map(|t| t.render(&ctx).unwrap()).collect();

    match &out[2].action {
        Action::Text {
            model,
            prompt,
            system,
            ..
        } => {
            assert_eq!(model, "m");
            assert_eq!(prompt, "A short summary. / T");
            assert_eq!(system.as_deref(), Some("sys hello"));
        }
        other => panic!("{other:?}"),
    }
    match &out[3].action {
        Action::Chat {
            messages, system, ..
        } => {
            assert_eq!(system.as_deref(), Some("chat sys A short summary."));
            assert_eq!(
                messages,
                &vec![
                    ChatMessage {
                        role: Role::System,
                        content: "be hello".into()
                    },
                    ChatMessage {
                        role: Role::User,
                        content: "hi A short summary.".into()
                    },
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    match &out[4].action {
        Action::Vision { prompt, images, .. } => {
            assert_eq!(prompt, "look 2");
            assert_eq!(images, &vec!["aGk=".to_owned(), "a".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
    match &out[5].action {
        Action::Embed { prompt, .. } => assert_eq!(prompt, "embed A short summary."),
        other => panic!("{other:?}"),
    }
    match &out[6].action {
        Action::External {
            service,
            function,
            args,
            kwargs,
        } => {
            assert_eq!(service, "Python Tasks");
            assert_eq!(function, "process_data");
            assert_eq!(
                args,
                &vec![
                    json!("A short summary."),
                    json!(2),
                    json!(3),
                    json!([["a", "b"]])
                ]
            );
            assert_eq!(kwargs["mode"], json!("fast"));
            assert_eq!(kwargs["data"], json!({ "text": "hello", "n": 2 }));
            assert_eq!(kwargs["n"], json!("n=2"));
        }
        other => panic!("{other:?}"),
    }
    // Everything but the templated fields is unchanged.
    for (a, b) in wf.tasks.iter().zip(&out) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.dependencies, b.dependencies);
        assert_eq!(a.retry, b.retry);
        assert_eq!(a.timeout, b.timeout);
        assert_eq!(a.priority, b.priority);
        assert_eq!(a.action.model(), b.action.model());
    }
}

#[test]
fn task_render_fails_on_missing_result() {
    let wf = valid(TASKS);
    let none = HashMap::new();
    let ctx = RenderContext {
        input: &wf.input,
        results: &none,
    };
    assert!(wf.tasks[0].render(&ctx).is_ok(), "input only");
    assert!(matches!(
        wf.tasks[2].render(&ctx),
        Err(TemplateError::MissingResult { task, .. }) if task == "Summarize"
    ));
}

#[test]
fn references_in_order_without_duplicates() {
    let wf = valid(TASKS);
    let res = |t: &str| Reference::Result {
        task: t.into(),
        path: vec![],
    };
    let inp = |p: &[&str]| Reference::Input {
        path: p.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(references(&wf.tasks[0]), vec![inp(&["text"])]);
    assert_eq!(
        references(&wf.tasks[2]),
        vec![
            res("Summarize"),
            Reference::Result {
                task: "Obj".into(),
                path: vec!["title".into()]
            },
            inp(&["text"]),
        ]
    );
    assert_eq!(
        references(&wf.tasks[3]),
        vec![res("Summarize"), inp(&["text"])]
    );
    assert_eq!(
        references(&wf.tasks[6]),
        vec![
            res("Summarize"),
            inp(&["n"]),
            Reference::Result {
                task: "Obj".into(),
                path: vec!["tags".into()]
            },
            inp(&[]),
        ]
    );
    assert_eq!(references(&wf.tasks[1]), vec![]);
    assert_eq!(inp(&["a", "b"]).to_string(), "input.a.b");
    assert_eq!(res("X Y").to_string(), "X Y.result");
    assert_eq!(res("X").task(), Some("X"));
    assert_eq!(inp(&[]).task(), None);
}
