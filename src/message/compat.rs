//! The compatibility payload of `POST /api/email` and its validation.

use serde::{Deserialize, Serialize};

use super::{FieldError, MAX_NAME_CHARS, MAX_SUBJECT_CHARS, parse_timestream, required_text};

/// The `data` object of `POST /api/email`, as the reference API service defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CompatEmail {
    /// 1 to 989 characters, no line breaks.
    #[schema(min_length = 1, max_length = 989)]
    pub email_subject: String,
    /// A display name ("John doe"), not an address: 1 to 256 characters, no line breaks.
    #[schema(min_length = 1, max_length = 256)]
    pub email_sender: String,
    /// Unix epoch seconds as a string, or RFC 3339; kept as the client sent it.
    #[schema(min_length = 1)]
    pub email_timestream: String,
    /// The body text; not blank.
    #[schema(min_length = 1)]
    pub email_content: String,
}

impl CompatEmail {
    /// Parses the body of `POST /api/email`: `{"data": {...}, "token": "..."}`. Returns the token
    /// (if any) separately so authentication can run before field validation.
    pub fn parse(
        body: &serde_json::Value,
    ) -> Result<(Option<String>, CompatFields<'_>), FieldError> {
        let obj = body
            .as_object()
            .ok_or_else(|| FieldError::new("body", "must be a JSON object"))?;
        let token = match obj.get("token") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(FieldError::new("token", "must be a string")),
        };
        Ok((token, CompatFields(obj.get("data"))))
    }
}

/// The not yet validated `data` member of a compat body.
pub struct CompatFields<'a>(Option<&'a serde_json::Value>);

impl CompatFields<'_> {
    pub fn validate(self) -> Result<CompatEmail, FieldError> {
        let data = match self.0 {
            None | Some(serde_json::Value::Null) => {
                return Err(FieldError::new("data", "is required"));
            }
            Some(serde_json::Value::Object(m)) => m,
            Some(_) => return Err(FieldError::new("data", "must be an object")),
        };
        let field = |name: &str| -> Result<String, FieldError> {
            match data.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                None | Some(serde_json::Value::Null) => {
                    Err(FieldError::new(format!("data.{name}"), "is required"))
                }
                Some(_) => Err(FieldError::new(format!("data.{name}"), "must be a string")),
            }
        };
        let email = CompatEmail {
            email_subject: field("email_subject")?,
            email_sender: field("email_sender")?,
            email_timestream: field("email_timestream")?,
            email_content: field("email_content")?,
        };
        required_text(
            "data.email_subject",
            &email.email_subject,
            MAX_SUBJECT_CHARS,
        )?;
        required_text("data.email_sender", &email.email_sender, MAX_NAME_CHARS)?;
        if email.email_timestream.trim().is_empty() {
            return Err(FieldError::new(
                "data.email_timestream",
                "must not be empty",
            ));
        }
        if parse_timestream(&email.email_timestream).is_none() {
            return Err(FieldError::new(
                "data.email_timestream",
                "must be Unix epoch seconds as a string (e.g. \"1700000000\") or RFC 3339",
            ));
        }
        // Blank like an empty subject or sender: a message with nothing to say is a mistake.
        if email.email_content.trim().is_empty() {
            return Err(FieldError::new(
                "data.email_content",
                "must not be empty or only white space",
            ));
        }
        if email.email_content.contains('\0') {
            return Err(FieldError::new(
                "data.email_content",
                "must not contain NUL",
            ));
        }
        Ok(email)
    }
}
