//! Inline templates of native messages: `template` holds Jinja sources (MiniJinja) for the
//! subject, text and html, and `variables` the values they use. They are rendered once, when the
//! message is accepted, so that what is stored, queued, sent and archived is the message as its
//! recipient sees it, and a template that cannot be rendered is a 400 naming the part.
//!
//! Rendering is bounded: an undefined variable is an error (not an empty string), a template runs
//! at most [`FUEL`] instructions, and each rendered part is cut off at [`MAX_RENDERED_BYTES`].
//! The html part is HTML-escaped (MiniJinja's auto-escaping by name: it is rendered as
//! `template.html`), the subject and text are not.

use std::io;

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use crate::message::FieldError;

/// MiniJinja instructions one part may run (loops included).
pub const FUEL: u64 = 100_000;
/// The most one rendered part may hold.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// The template sources of a native message; at least one part is given, and a part given here
/// is not also given directly (`subject`, `text`, `html`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// The values a template refers to: a JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Variables(pub serde_json::Map<String, serde_json::Value>);

// JSON has no NaN, so equality of parsed JSON values is reflexive.
impl Eq for Variables {}

/// The rendered parts, for those the template gives.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// Renders every part of `template` with `variables`. An error names the part by its field
/// (`template.subject`, with `prefix` before it for batch entries).
pub fn render(
    template: &Template,
    variables: &Variables,
    prefix: &str,
) -> Result<Rendered, FieldError> {
    if template.subject.is_none() && template.text.is_none() && template.html.is_none() {
        return Err(FieldError::new(
            format!("{prefix}template"),
            "needs at least one of subject, text and html",
        ));
    }
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    let context = minijinja::Value::from(minijinja::value::Serde(&variables.0));
    let part =
        |name: &'static str, source: &Option<String>| -> Result<Option<String>, FieldError> {
            let Some(source) = source else {
                return Ok(None);
            };
            let field = format!("{prefix}{name}");
            render_part(&env, name, source, &context)
                .map(Some)
                .map_err(|e| FieldError::new(field, e))
        };
    Ok(Rendered {
        subject: part("template.subject", &template.subject)?,
        text: part("template.text", &template.text)?,
        html: part("template.html", &template.html)?,
    })
}

fn render_part(
    env: &Environment<'_>,
    name: &str,
    source: &str,
    context: &minijinja::Value,
) -> Result<String, String> {
    let compiled = env
        .template_from_named_str(name, source)
        .map_err(|e| format!("is not a valid template: {}", describe(&e)))?;
    let mut out = Capped::default();
    if let Err(e) = compiled.render_captured_to(context.clone(), &mut out) {
        if out.overflowed {
            return Err(format!(
                "renders to more than {MAX_RENDERED_BYTES} bytes, the limit"
            ));
        }
        return Err(format!("cannot be rendered: {}", describe(&e)));
    }
    // MiniJinja writes UTF-8 only.
    String::from_utf8(out.buf).map_err(|_| "renders to invalid UTF-8".to_string())
}

/// The error and, where MiniJinja knows it, its line: "undefined value (line 1)".
fn describe(e: &minijinja::Error) -> String {
    let what = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_string);
    match e.line() {
        Some(line) => format!("{what} (line {line})"),
        None => what,
    }
}

/// A buffer that refuses to grow past [`MAX_RENDERED_BYTES`], which stops the render.
#[derive(Default)]
struct Capped {
    buf: Vec<u8>,
    overflowed: bool,
}

impl io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(io::Error::other("rendered output over the limit"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: serde_json::Value) -> Variables {
        serde_json::from_value(v).expect("an object")
    }

    fn template(subject: &str, text: &str, html: &str) -> Template {
        Template {
            subject: Some(subject.into()),
            text: Some(text.into()),
            html: Some(html.into()),
        }
    }

    /// Loops, filters and nested values render; only the html part is escaped.
    #[test]
    fn renders_each_part_escaping_html_only() {
        let t = template(
            "Order {{ order.id }} for {{ name }}",
            "{% for item in order.items %}- {{ item.qty }} x {{ item.name | upper }}\n{% endfor %}",
            "<p>Hello {{ name }}</p>",
        );
        let v = vars(json!({"name": "Ada <&>", "order": {"id": 42, "items": [
            {"name": "tea", "qty": 2}, {"name": "cake", "qty": 1}]}}));
        let r = render(&t, &v, "").expect("renders");
        assert_eq!(r.subject.as_deref(), Some("Order 42 for Ada <&>"));
        assert_eq!(r.text.as_deref(), Some("- 2 x TEA\n- 1 x CAKE\n"));
        assert_eq!(r.html.as_deref(), Some("<p>Hello Ada &lt;&amp;&gt;</p>"));
    }

    /// Every failure is a field error naming the part, and none takes unbounded time or memory.
    #[test]
    fn failures_name_the_part() {
        let v = vars(json!({"name": "Ada"}));
        let cases = [
            (
                template("Hi {{ nobody }}", "", ""),
                "template.subject",
                "undefined",
            ),
            (
                template("ok", "{% for %}", ""),
                "template.text",
                "not a valid template",
            ),
            (
                template("ok", "", "{{ name.x.y }}"),
                "messages[1].template.html",
                "undefined",
            ),
            (
                template(
                    "ok",
                    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                    "",
                ),
                "template.text",
                "fuel",
            ),
            (
                template(
                    "ok",
                    "{% for i in range(50) %}{{ 'x' * 100000 }}{% endfor %}",
                    "",
                ),
                "template.text",
                "limit",
            ),
        ];
        for (i, (t, field, says)) in cases.into_iter().enumerate() {
            let prefix = if field.starts_with("messages") {
                "messages[1]."
            } else {
                ""
            };
            let e = render(&t, &v, prefix).expect_err("refused");
            assert_eq!(e.field, field, "case {i}: {e}");
            assert!(e.message.contains(says), "case {i}: {e}");
        }
        let empty = Template {
            subject: None,
            text: None,
            html: None,
        };
        assert_eq!(render(&empty, &v, "").expect_err("empty").field, "template");
    }
}
