//! Settings written as references to AWS secrets, replaced by their values at start-up:
//! `ssm:/path/name` (SSM Parameter Store, SecureStrings decrypted) and
//! `secretsmanager:name-or-arn`, optionally `#json_key` to take one key of a JSON secret.
//! `DATABASE_URL=ssm:/mailroom/prod/database-url` is the common case.

use figment::Figment;
use figment::value::Value;

use super::ConfigError;

/// A setting's reference to a secret.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    Ssm(String),
    SecretsManager { id: String, key: Option<String> },
}

impl Reference {
    pub fn parse(value: &str) -> Option<Self> {
        if let Some(name) = value.strip_prefix("ssm:") {
            return Some(Reference::Ssm(name.to_string()));
        }
        let rest = value.strip_prefix("secretsmanager:")?;
        // An ARN holds colons but never '#': a '#' starts the JSON key.
        Some(match rest.rsplit_once('#') {
            Some((id, key)) => Reference::SecretsManager {
                id: id.to_string(),
                key: Some(key.to_string()),
            },
            None => Reference::SecretsManager {
                id: rest.to_string(),
                key: None,
            },
        })
    }
}

/// Every setting (by its lower-case name) whose value is a reference.
fn references(figment: &Figment) -> Vec<(String, Reference)> {
    let Ok(values) = figment.extract::<std::collections::BTreeMap<String, Value>>() else {
        return Vec::new();
    };
    values
        .into_iter()
        .filter_map(|(k, v)| Some((k, Reference::parse(v.as_str()?)?)))
        .collect()
}

#[cfg(feature = "ssm")]
fn text(figment: &Figment, key: &str) -> Option<String> {
    figment.extract_inner::<String>(key).ok()
}

/// Replaces every reference with the value it names. Without the `ssm` feature a reference is
/// an error naming the setting.
pub async fn resolve(figment: Figment) -> Result<Figment, ConfigError> {
    let refs = references(&figment);
    if refs.is_empty() {
        return Ok(figment);
    }
    #[cfg(not(feature = "ssm"))]
    {
        let (key, _) = &refs[0];
        Err(ConfigError::Source(format!(
            "Setting {} is a reference to an AWS secret, which needs a build with the `ssm` feature.",
            key.to_uppercase()
        )))
    }
    #[cfg(feature = "ssm")]
    {
        let (first, _) = &refs[0];
        let aws = crate::aws::sdk_config(
            text(&figment, "aws_region").as_deref(),
            text(&figment, "aws_endpoint_url").as_deref(),
            &first.to_uppercase(),
        )
        .await
        .map_err(|e| ConfigError::Source(format!("{e}.")))?;
        let ssm = aws_sdk_ssm::Client::new(&aws);
        let secrets = aws_sdk_secretsmanager::Client::new(&aws);
        let mut figment = figment;
        for (key, reference) in refs {
            let var = key.to_uppercase();
            let value = fetch(&ssm, &secrets, &reference)
                .await
                .map_err(|e| ConfigError::Source(format!("Setting {var}: {e}.")))?;
            tracing::debug!(setting = %var, "Setting read from AWS.");
            figment = figment.merge((key, value));
        }
        Ok(figment)
    }
}

#[cfg(feature = "ssm")]
async fn fetch(
    ssm: &aws_sdk_ssm::Client,
    secrets: &aws_sdk_secretsmanager::Client,
    reference: &Reference,
) -> Result<String, String> {
    match reference {
        Reference::Ssm(name) => ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot read SSM parameter {name}: {}",
                    crate::aws::explain(&e)
                )
            })?
            .parameter()
            .and_then(|p| p.value())
            .map(str::to_string)
            .ok_or_else(|| format!("SSM parameter {name} has no value")),
        Reference::SecretsManager { id, key } => {
            let out = secrets
                .get_secret_value()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| format!("cannot read secret {id}: {}", crate::aws::explain(&e)))?;
            let secret = out
                .secret_string()
                .ok_or_else(|| format!("secret {id} has no string value"))?;
            match key {
                None => Ok(secret.to_string()),
                Some(key) => {
                    let json: serde_json::Value = serde_json::from_str(secret).map_err(|_| {
                        format!("secret {id} is not JSON, so #{key} cannot be read")
                    })?;
                    match &json[key.as_str()] {
                        serde_json::Value::String(s) => Ok(s.clone()),
                        serde_json::Value::Null => Err(format!("secret {id} has no key {key}")),
                        other => Ok(other.to_string()),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_recognised() {
        assert_eq!(
            Reference::parse("ssm:/mailroom/prod/db"),
            Some(Reference::Ssm("/mailroom/prod/db".into()))
        );
        assert_eq!(
            Reference::parse(
                "secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf#password"
            ),
            Some(Reference::SecretsManager {
                id: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf".into(),
                key: Some("password".into()),
            })
        );
        assert_eq!(
            Reference::parse("secretsmanager:prod/db"),
            Some(Reference::SecretsManager {
                id: "prod/db".into(),
                key: None
            })
        );
        assert_eq!(Reference::parse("postgres://db/mailroom"), None);
    }
}
