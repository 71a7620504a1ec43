//! Named templates (`TEMPLATES_DIR`): a native message that names one is rendered when it is
//! accepted, then delivered and archived like any other; what a template cannot make is a 400
//! naming the field, with nothing stored.

use serde_json::{Value, json};

use crate::helpers::{TestApp, accepted_id, spawn_app_with, unique_rcpt};

/// A template directory with a receipt (subject, text with a loop and an include, html on a
/// shared layout) and two text-only ones.
fn template_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, text) in [
        ("receipt.subject", "Receipt {{ order }} for {{ name }}\n"),
        (
            "receipt.txt",
            "Hello {{ name }},\n{% for item in items %}\n- {{ item.title }}: {{ item.price }}\n{% endfor %}\n{% include \"footer.txt\" %}\n",
        ),
        (
            "receipt.html",
            "{% extends \"layout.html\" %}{% block body %}<p>Hello {{ name }}</p>{% endblock %}",
        ),
        (
            "layout.html",
            "<html><body>{% block body %}{% endblock %}</body></html>",
        ),
        ("footer.txt", "-- The shop"),
        ("greeting.subject", "Hi {{ name }}"),
        ("greeting.txt", "Hi {{ name }}."),
        ("notice.subject", "{{ title }}"),
        ("notice.txt", "{{ body }}"),
    ] {
        std::fs::write(dir.path().join(name), text).expect("written");
    }
    dir
}

async fn spawn_with_templates() -> (TestApp, tempfile::TempDir) {
    let dir = template_dir();
    let path = dir.path().to_path_buf();
    let app = spawn_app_with(move |raw| raw.templates_dir = Some(path)).await;
    (app, dir)
}

fn templated(to: &str, template: &str, variables: Value) -> Value {
    json!({
        "from": "Shop <shop@example.com>",
        "to": [to],
        "template": template,
        "variables": variables,
    })
}

/// The relay gets the rendered subject and both bodies (the html escaped, the text as it is),
/// and the record and the archive hold the rendered message with its template and variables.
#[tokio::test]
async fn a_templated_message_is_rendered_delivered_and_archived() {
    let (app, _dir) = spawn_with_templates().await;
    let to = unique_rcpt("template");
    let variables = json!({
        "name": "Ann <ann>",
        "order": 1042,
        "items": [{"title": "Tea", "price": "4.50"}, {"title": "Cups", "price": "12.00"}],
    });
    let r = app
        .post_message(&templated(&to, "receipt", variables.clone()), None)
        .await;
    let id = accepted_id(r).await;
    assert_eq!(app.dispatch_all_pending().await, 1);

    let got = app.relay.received_for(&to);
    assert_eq!(got.len(), 1, "exactly one delivery");
    let mail = &got[0];
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Receipt 1042 for Ann <ann>")
    );
    assert!(mail.raw.contains("multipart/alternative"), "{}", mail.raw);
    let text = "Hello Ann <ann>,\r\n- Tea: 4.50\r\n- Cups: 12.00\r\n-- The shop";
    assert!(mail.raw.contains(text), "the text body: {}", mail.raw);
    assert!(
        mail.raw
            .contains("<html><body><p>Hello Ann &lt;ann&gt;</p></body></html>"),
        "the html body, escaped: {}",
        mail.raw
    );

    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "delivered");
    assert_eq!(m["subject"], "Receipt 1042 for Ann <ann>");
    let key = m["archive_key"].as_str().expect("archive_key");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(app.archive_dir().join(key)).expect("archived"))
            .expect("JSON");
    assert_eq!(doc["template"], "receipt");
    assert_eq!(doc["variables"], variables);
    assert_eq!(doc["subject"], "Receipt 1042 for Ann <ann>");
    assert!(
        doc["text"]
            .as_str()
            .expect("text")
            .starts_with("Hello Ann <ann>,\n- Tea: 4.50\n")
    );
    assert_eq!(doc["outcome"]["status"], "delivered");
}

/// Each bad use of a template is a 400 naming the field, and leaves nothing stored or queued;
/// in a batch, only the entry that cannot be rendered is refused.
#[tokio::test]
async fn what_a_template_cannot_make_is_refused_by_field() {
    let (app, _dir) = spawn_with_templates().await;
    let to = unique_rcpt("template-errors");
    let cases = [
        (
            templated(&to, "missing", json!({"name": "A"})),
            "template",
            "loaded: greeting, notice, receipt",
        ),
        (
            templated(&to, "greeting", json!({})),
            "variables",
            "undefined",
        ),
        (
            templated(&to, "greeting", json!({"nome": "A"})),
            "variables",
            "greeting.subject line 1",
        ),
        (
            templated(
                &to,
                "greeting",
                json!({"name": "A\r\nBcc: victim@example.com"}),
            ),
            "variables",
            "CR or LF",
        ),
        (
            templated(&to, "notice", json!({"title": "  ", "body": "B"})),
            "variables",
            "makes a subject that must not be empty",
        ),
        (
            json!({"from": "a@example.com", "to": [&to], "template": "greeting",
                   "variables": {"name": "A"}, "subject": "Mine"}),
            "subject",
            "cannot be given with a template",
        ),
        (
            json!({"from": "a@example.com", "to": [&to], "template": "greeting",
                   "variables": {"name": "A"}, "html": "<p>mine</p>"}),
            "html",
            "cannot be given with a template",
        ),
        (
            json!({"from": "a@example.com", "to": [&to], "subject": "S", "text": "T",
                   "variables": {"name": "A"}}),
            "variables",
            "give template too",
        ),
        (
            json!({"from": "a@example.com", "to": [&to], "template": "greeting",
                   "variables": ["A"]}),
            "variables",
            "",
        ),
        (
            json!({"from": "a@example.com", "to": [&to], "template": 7}),
            "template",
            "",
        ),
    ];
    for (body, field, says) in cases {
        let r = app.post_message(&body, None).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.expect("a JSON error");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
        let message = e["error"]["message"].as_str().expect("a message");
        assert!(message.contains(says), "{body}: {message}");
    }
    assert_eq!(app.message_count().await, 0, "nothing stored");
    assert_eq!(app.dispatch_all_pending().await, 0, "nothing queued");

    let batch = json!({"messages": [
        templated(&to, "greeting", json!({"name": "Bo"})),
        templated(&to, "greeting", json!({})),
    ]});
    let r = app.post_batch(&batch).await;
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["results"][0]["status"], "queued", "{v}");
    assert_eq!(
        v["results"][1]["error"]["field"], "messages[1].variables",
        "{v}"
    );
    assert_eq!(app.dispatch_all_pending().await, 1);
    let got = app.relay.received_for(&to);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("Subject").as_deref(), Some("Hi Bo"));
}

/// A TEMPLATES_DIR that was set but cannot be read, or a template that does not compile, stops
/// an API's start-up with a sentence naming the setting and the file; an unset TEMPLATES_DIR
/// with no `$DATA_DIR/templates` is no templates, not an error. A worker reads no templates.
#[tokio::test]
async fn bad_template_settings_stop_start_up() {
    use mailroom::startup::{Application, Roles};
    let relay = crate::helpers::Relay::from_env();
    let data = tempfile::tempdir().expect("a temporary directory");
    let settings = |templates_dir: Option<std::path::PathBuf>| {
        let mut raw = crate::helpers::test_config(data.path(), &relay);
        raw.templates_dir = templates_dir;
        raw.into_settings().expect("valid settings")
    };
    let start = |templates_dir: Option<std::path::PathBuf>| {
        let settings = settings(templates_dir);
        async move {
            let roles = Roles {
                api: true,
                worker: false,
            };
            Application::build(settings, roles)
                .await
                .map(|app| {
                    let templates = app.backends().templates.current();
                    templates.names().map(String::from).collect::<Vec<_>>()
                })
                .map_err(|e| e.to_string())
        }
    };
    assert_eq!(start(None).await, Ok(vec![]), "no directory, no templates");

    let missing = data.path().join("nowhere");
    let e = start(Some(missing.clone()))
        .await
        .expect_err("a missing directory");
    assert!(e.starts_with("Invalid setting TEMPLATES_DIR="), "{e}");
    assert!(e.contains("nowhere"), "{e}");
    let worker = Roles {
        api: false,
        worker: true,
    };
    let app = Application::build(settings(Some(missing)), worker).await;
    assert!(app.is_ok(), "a worker needs no templates");

    let dir = template_dir();
    std::fs::write(dir.path().join("broken.subject"), "Hi {{ name").expect("written");
    let e = start(Some(dir.path().to_path_buf()))
        .await
        .expect_err("a syntax error");
    assert!(e.contains("broken.subject is not a valid template"), "{e}");

    // The default place, $DATA_DIR/templates, is read when it exists.
    let default = data.path().join("templates");
    std::fs::create_dir(&default).expect("created");
    std::fs::write(default.join("hello.subject"), "Hello").expect("written");
    std::fs::write(default.join("hello.html"), "<p>Hello</p>").expect("written");
    assert_eq!(start(None).await, Ok(vec!["hello".to_string()]));
}
