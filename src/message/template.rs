//! Named message templates: MiniJinja files in `TEMPLATES_DIR`, rendered when a message is
//! accepted, so what is stored, queued, delivered and archived is the finished message.
//!
//! A template named `welcome` is the file `welcome.subject` with `welcome.txt`, `welcome.html` or
//! both beside it. Other files of the directory (a `layout.html` to `{% extends %}`, a
//! `footer.txt` to `{% include %}`) are loaded too, but a request cannot name them. Every file is
//! compiled at start-up, so a syntax error stops start-up instead of failing requests.
//!
//! Rendering is strict: a variable the template prints and the request does not give is a 400,
//! never an empty string in a customer's inbox. Everything the HTML body prints is escaped (a
//! variable holding `<script>` arrives as text), whichever file prints it: a `footer.txt` that
//! `welcome.html` includes escapes there and not in `welcome.txt`. The subject and the text body
//! print as they are. Block tags take their own line break with them (`trim_blocks`,
//! `lstrip_blocks`), so a `{% for %}` in a plain-text body leaves no blank lines. Each part has a
//! fuel budget and a size limit (the request body limit), so no template can loop without end,
//! or print without end, over what a request sends.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, StringInput, ValueKind};
use minijinja::{
    AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior, Value,
};

/// Instructions one part of one message may run: far above what a receipt with a few hundred
/// lines needs, far below what a request could make a loop do in a second.
const FUEL: u64 = 2_000_000;

/// How many times its size limit one part may print in all, what macros, `{% set %}` and
/// `{% filter %}` blocks print included: MiniJinja holds such output in memory before the part's
/// own output sees it, so without this a loop over a request's list inside a macro could print
/// the request's largest string a million times into memory. Output printed through a macro
/// counts once inside it and once where it is printed, hence more than once the limit.
const PRINT_BUDGET: usize = 4;

/// The widest `indent` a template may ask for: the built-in builds the indent string first,
/// so a width taken from a request could ask for terabytes.
const MAX_INDENT: usize = 256;

/// Where a render keeps how many bytes it printed (a MiniJinja temp: one per render).
const PRINTED: &str = "mailroom.printed";

/// What a file's name says it is.
const SUBJECT: &str = ".subject";
const TEXT: &str = ".txt";
const HTML: &str = ".html";

/// The templates loaded at start-up (none when there is no template directory).
pub struct Templates {
    /// Every file, printing as it is: for the subject and the text body.
    plain: Environment<'static>,
    /// Every file again, escaping what it prints: for the HTML body. Escaping follows the part
    /// being rendered, not the file's name, since MiniJinja escapes an included or extended
    /// file by that file's own name.
    html: Environment<'static>,
    /// Each template a request can name, and which bodies it has.
    parts: BTreeMap<String, Bodies>,
    /// Most bytes one rendered part may have.
    max_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bodies {
    text: bool,
    html: bool,
}

/// A template's output for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("no template of that name is loaded")]
    Unknown,
    /// A variable is missing or of the wrong shape, or the fuel ran out.
    #[error("{0}")]
    Failed(String),
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.parts.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The templates the API renders with, replaced whole when `TEMPLATES_DIR` is loaded again
/// (SIGHUP): a request renders with the set that was current when it began.
#[derive(Default)]
pub struct LiveTemplates(RwLock<Arc<Templates>>);

impl LiveTemplates {
    pub fn current(&self) -> Arc<Templates> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn replace(&self, templates: Templates) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(templates);
    }
}

impl Default for Templates {
    fn default() -> Self {
        let max_bytes = 1024 * 1024;
        Self {
            plain: environment(AutoEscape::None, max_bytes),
            html: environment(AutoEscape::Html, max_bytes),
            parts: BTreeMap::new(),
            max_bytes,
        }
    }
}

/// Collects a rendered part, refusing to grow past its limit.
struct Capped {
    out: Vec<u8>,
    limit: usize,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            self.over = true;
            return Err(std::io::Error::other("over the size limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn environment(escape: AutoEscape, max_bytes: usize) -> Environment<'static> {
    let mut env = Environment::new();
    let budget = max_bytes.saturating_mul(PRINT_BUDGET);
    env.set_formatter(move |out, state, value| print(out, state, value, budget));
    env.add_filter("indent", indent);
    env.set_auto_escape_callback(move |_| escape.clone());
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env.set_fuel(Some(FUEL));
    env
}

/// Prints one `{{ ... }}` as MiniJinja would, after checking it: a null or a list or map
/// printed whole is a request's mistake (it would show `none` or `[1, 2]` to a customer), and
/// the render's printing stays within `budget` bytes.
fn print(out: &mut Output, state: &mut State, value: &Value, budget: usize) -> Result<(), Error> {
    let refuse = |what: &str| {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("a value printed is {what}; the template needs text or a number there"),
        ))
    };
    match value.kind() {
        ValueKind::None => return refuse("null"),
        ValueKind::Seq | ValueKind::Iterable => return refuse("a list"),
        ValueKind::Map => return refuse("an object"),
        _ => {}
    }
    let size = value
        .as_str()
        .map_or_else(|| value.to_string().len(), str::len);
    let printed = state
        .get_temp(PRINTED)
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(0)
        .saturating_add(size);
    if printed > budget {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "the template prints more than {budget} bytes in all ({PRINT_BUDGET} × MAX_BODY_BYTES, macros and blocks included)"
            ),
        ));
    }
    state.set_temp(PRINTED, Value::from(printed));
    minijinja::escape_formatter(out, state, value)
}

/// MiniJinja's `indent`, with its width held to [`MAX_INDENT`].
fn indent(
    value: StringInput<'_>,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let asked = match width {
        Some(width) => Some(width),
        None => kwargs.peek::<Option<usize>>("width")?,
    };
    if asked.is_some_and(|w| w > MAX_INDENT) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("indent is at most {MAX_INDENT} wide"),
        ));
    }
    minijinja::filters::indent(value, width, first, blank, kwargs)
}

impl Templates {
    /// Compiles every file of `dir` (not of its subdirectories; names starting with `.` are
    /// skipped); a rendered part may be at most `max_bytes` long. The error is a sentence naming
    /// the file and what is wrong with it.
    pub fn load(dir: &Path, max_bytes: usize) -> Result<Self, String> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read the directory {}: {e}", dir.display()))?;
        let mut plain = environment(AutoEscape::None, max_bytes);
        let mut html = environment(AutoEscape::Html, max_bytes);
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                return Err(format!("{} is not a UTF-8 file name", path.display()));
            };
            // Following links: a Kubernetes ConfigMap mounts its files as links.
            if name.starts_with('.') || !path.is_file() {
                continue;
            }
            let source = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {} as UTF-8 text: {e}", path.display()))?;
            let invalid = |e| format!("{} is not a valid template: {e}", path.display());
            html.add_template_owned(name.clone(), source.clone())
                .map_err(invalid)?;
            plain
                .add_template_owned(name.clone(), source)
                .map_err(invalid)?;
            files.push(name);
        }
        let mut parts = BTreeMap::new();
        for file in &files {
            let Some(name) = file.strip_suffix(SUBJECT) else {
                continue;
            };
            let has = |suffix: &str| files.iter().any(|f| *f == format!("{name}{suffix}"));
            let bodies = Bodies {
                text: has(TEXT),
                html: has(HTML),
            };
            if !bodies.text && !bodies.html {
                return Err(format!(
                    "the template {name:?} has a subject ({file}) but no body: add {name}{TEXT}, {name}{HTML} or both in {}",
                    dir.display()
                ));
            }
            parts.insert(name.to_string(), bodies);
        }
        Ok(Self {
            plain,
            html,
            parts,
            max_bytes,
        })
    }

    /// The names a request can give as `template`.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Renders the template `name` with `variables`. The subject is trimmed (a file ends with a
    /// line break); the bodies are as the template makes them.
    pub fn render(
        &self,
        name: &str,
        variables: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Rendered, RenderError> {
        let bodies = self.parts.get(name).ok_or(RenderError::Unknown)?;
        let context = Value::from(Serde(variables));
        let part = |suffix: &str, env: &Environment| -> Result<String, RenderError> {
            let file = format!("{name}{suffix}");
            let mut out = Capped {
                out: Vec::new(),
                limit: self.max_bytes,
                over: false,
            };
            let rendered = env
                .get_template(&file)
                .and_then(|t| t.render_captured_to(&context, &mut out));
            match rendered {
                Ok(_) => String::from_utf8(out.out)
                    .map_err(|e| RenderError::Failed(format!("{file} made invalid UTF-8: {e}"))),
                Err(_) if out.over => Err(RenderError::Failed(format!(
                    "{file} makes more than {} bytes (MAX_BODY_BYTES)",
                    self.max_bytes
                ))),
                Err(e) if e.kind() == ErrorKind::UndefinedError => {
                    Err(RenderError::Failed(undefined(&e, env, variables)))
                }
                Err(e) => Err(RenderError::Failed(describe(&e))),
            }
        };
        Ok(Rendered {
            subject: part(SUBJECT, &self.plain)?.trim().to_string(),
            text: bodies.text.then(|| part(TEXT, &self.plain)).transpose()?,
            html: bodies.html.then(|| part(HTML, &self.html)).transpose()?,
        })
    }
}

/// An undefined value, naming the variables the request did not give that the file where it
/// happened uses (MiniJinja's error says only "undefined value"). An attribute missing from a
/// variable that was given (`item.title`) is not named: the file's line says where.
fn undefined(
    e: &minijinja::Error,
    env: &Environment,
    variables: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut missing: Vec<String> = e
        .name()
        .and_then(|file| env.get_template(file).ok())
        .map(|t| t.undeclared_variables(false))
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !variables.contains_key(v) && !env.globals().any(|(g, _)| g == v))
        .collect();
    if missing.is_empty() {
        return describe(e);
    }
    missing.sort();
    let names: Vec<String> = missing.iter().map(|v| format!("`{v}`")).collect();
    let verb = if names.len() == 1 { "is" } else { "are" };
    let mut text = format!("undefined value: {} {verb} undefined", names.join(", "));
    if let (Some(file), Some(line)) = (e.name(), e.line()) {
        text.push_str(&format!(" (in {file} line {line})"));
    }
    text
}

/// The error and where it happened (`welcome.txt` line 3), without the source listing that the
/// alternate form adds: a client reads this in a 400.
fn describe(e: &minijinja::Error) -> String {
    let mut text = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let (Some(file), Some(line)) = (e.name(), e.line()) {
        text.push_str(&format!(" (in {file} line {line})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("written");
        }
        dir
    }

    fn vars(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().expect("an object").clone()
    }

    #[test]
    fn renders_subject_text_and_escaped_html_with_a_shared_layout() {
        let dir = dir_with(&[
            ("receipt.subject", "Receipt {{ order }} for {{ name }}\n"),
            (
                "receipt.txt",
                "Hello {{ name }},\n{% for item in items %}\n- {{ item }}\n{% endfor %}\n{% include \"footer.txt\" %}",
            ),
            (
                "receipt.html",
                "{% extends \"layout.html\" %}{% block body %}<p>Hello {{ name }}</p>{% include \"footer.txt\" %}{% endblock %}",
            ),
            (
                "layout.html",
                "<html><body>{% block body %}{% endblock %}</body></html>",
            ),
            // A partial named .txt prints into the HTML body escaped, into the text as it is.
            ("footer.txt", "-- {{ shop }}"),
            (".hidden", "{% broken"),
        ]);
        let templates = Templates::load(dir.path(), 1024 * 1024).expect("loads");
        assert_eq!(templates.names().collect::<Vec<_>>(), ["receipt"]);
        let out = templates
            .render(
                "receipt",
                &vars(json!({"name": "<b>Ann</b>", "order": 42, "items": ["tea", "cups"], "shop": "<i>Tea</i>"})),
            )
            .expect("renders");
        assert_eq!(out.subject, "Receipt 42 for <b>Ann</b>");
        assert_eq!(
            out.text.as_deref(),
            Some("Hello <b>Ann</b>,\n- tea\n- cups\n-- <i>Tea</i>")
        );
        assert_eq!(
            out.html.as_deref(),
            Some(
                "<html><body><p>Hello &lt;b&gt;Ann&lt;&#x2f;b&gt;</p>-- &lt;i&gt;Tea&lt;&#x2f;i&gt;</body></html>"
            )
        );
    }

    #[test]
    fn a_missing_variable_or_unknown_name_is_an_error_not_an_empty_string() {
        let dir = dir_with(&[("hi.subject", "Hi {{ name }}"), ("hi.txt", "Hi")]);
        let templates = Templates::load(dir.path(), 1024 * 1024).expect("loads");
        let e = templates
            .render("hi", &serde_json::Map::new())
            .expect_err("name is missing");
        let RenderError::Failed(text) = e else {
            panic!("expected a render failure, got {e:?}")
        };
        assert_eq!(
            text,
            "undefined value: `name` is undefined (in hi.subject line 1)"
        );
        // The variables missing from the file where rendering stopped are named; a loop's own
        // variable and a global function are not among them; an attribute missing from a
        // variable given is said without a name, at its line.
        let dir = dir_with(&[
            ("r.subject", "Receipt {{ order }}"),
            (
                "r.txt",
                "{% for i in range(2) %}{{ i }}{% endfor %}\n{% for item in items %}{{ item.title }} {{ currency }}{% endfor %}",
            ),
        ]);
        let templates = Templates::load(dir.path(), 1024 * 1024).expect("loads");
        let given = |v: serde_json::Value| v.as_object().expect("an object").clone();
        let failed = |v| match templates.render("r", &given(v)) {
            Err(RenderError::Failed(text)) => text,
            other => panic!("expected a render failure, got {other:?}"),
        };
        assert_eq!(
            failed(serde_json::json!({"order": 1})),
            "undefined value: `currency`, `items` are undefined (in r.txt line 2)"
        );
        let text = failed(serde_json::json!({"order": 1, "currency": "EUR", "items": [{}]}));
        assert!(
            text.starts_with("undefined value") && text.ends_with("(in r.txt line 2)"),
            "{text}"
        );
        assert!(matches!(
            templates.render("nope", &serde_json::Map::new()),
            Err(RenderError::Unknown)
        ));
        // A layout is loaded but is not a template a request can name.
        assert!(matches!(
            templates.render("hi.txt", &serde_json::Map::new()),
            Err(RenderError::Unknown)
        ));
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel() {
        let dir = dir_with(&[
            ("loop.subject", "Loop"),
            (
                "loop.txt",
                "{% for a in xs %}{% for b in xs %}{% for c in xs %}.{% endfor %}{% endfor %}{% endfor %}",
            ),
        ]);
        let templates = Templates::load(dir.path(), 1024 * 1024).expect("loads");
        let xs: Vec<u32> = (0..1000).collect();
        let e = templates
            .render("loop", &vars(json!({ "xs": xs })))
            .expect_err("a billion steps");
        assert!(e.to_string().contains("fuel"), "{e}");
    }

    #[test]
    fn a_part_over_the_size_limit_is_refused() {
        let dir = dir_with(&[
            ("big.subject", "Big"),
            ("big.txt", "{% for x in xs %}{{ filler }}{% endfor %}"),
        ]);
        let templates = Templates::load(dir.path(), 10_000).expect("loads");
        let small = vars(json!({"xs": [1, 2], "filler": "a".repeat(100)}));
        assert_eq!(
            templates
                .render("big", &small)
                .expect("fits")
                .text
                .map(|t| t.len()),
            Some(200)
        );
        let large = vars(json!({"xs": (0..200).collect::<Vec<u32>>(), "filler": "a".repeat(100)}));
        let e = templates.render("big", &large).expect_err("20,000 bytes");
        assert!(
            e.to_string()
                .contains("big.txt makes more than 10000 bytes"),
            "{e}"
        );
    }

    #[test]
    fn what_macros_and_blocks_hold_counts_against_a_budget() {
        let dir = dir_with(&[
            ("m.subject", "M"),
            (
                "m.txt",
                "{% macro lines(items) %}{% for i in items %}{{ name }}{% endfor %}{% endmacro %}{% set held %}{{ lines(items) }}{% endset %}{{ held | length }}",
            ),
        ]);
        let templates = Templates::load(dir.path(), 100_000).expect("loads");
        let fits = vars(json!({"items": [1, 2, 3], "name": "n".repeat(1_000)}));
        assert_eq!(
            templates.render("m", &fits).expect("fits").text.as_deref(),
            Some("3000")
        );
        // Its own output is 7 bytes; what the macro held would be 10 MB.
        let held = vars(json!({"items": vec![0; 10_000], "name": "n".repeat(1_000)}));
        let e = templates.render("m", &held).expect_err("over the budget");
        assert!(
            e.to_string()
                .contains("prints more than 400000 bytes in all"),
            "{e}"
        );
    }

    #[test]
    fn request_values_cannot_size_an_indent_or_print_as_none_or_lists() {
        let dir = dir_with(&[
            ("t.subject", "Hi {{ name }}"),
            ("t.txt", "{{ body | indent(width) }}"),
        ]);
        let templates = Templates::load(dir.path(), 1024 * 1024).expect("loads");
        let ok = vars(json!({"name": 7, "body": "a\nb", "width": 2}));
        let out = templates.render("t", &ok).expect("renders");
        assert_eq!(
            (out.subject.as_str(), out.text.as_deref()),
            ("Hi 7", Some("a\n  b"))
        );
        for (bad, says) in [
            (
                json!({"name": "x", "body": "a", "width": 1_000_000_000_000u64}),
                "indent is at most 256",
            ),
            (
                json!({"name": null, "body": "a", "width": 2}),
                "printed is null",
            ),
            (
                json!({"name": [1], "body": "a", "width": 2}),
                "printed is a list",
            ),
            (
                json!({"name": {"a": 1}, "body": "a", "width": 2}),
                "printed is an object",
            ),
        ] {
            let e = templates
                .render("t", &vars(bad.clone()))
                .expect_err("refused");
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn start_up_errors_name_the_file() {
        let dir = dir_with(&[("bad.subject", "Hi {{ name"), ("bad.txt", "x")]);
        let e = Templates::load(dir.path(), 1024 * 1024).expect_err("a syntax error");
        assert!(e.contains("bad.subject is not a valid template"), "{e}");

        let dir = dir_with(&[("lonely.subject", "Hi")]);
        let e = Templates::load(dir.path(), 1024 * 1024).expect_err("no body");
        assert!(e.contains("\"lonely\" has a subject"), "{e}");

        let e =
            Templates::load(&dir.path().join("missing"), 1024 * 1024).expect_err("no directory");
        assert!(e.contains("cannot read the directory"), "{e}");
    }
}
