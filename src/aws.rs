//! The AWS SDK configuration the SQS, SSM, Secrets Manager and SES clients share: credentials
//! from the default chain (environment, profile, ECS task role, instance profile), region and
//! endpoint from `AWS_REGION` and `AWS_ENDPOINT_URL` (the endpoint points tests at an emulator).

/// Loads the shared configuration; `region` and `endpoint` override what the environment says.
/// Fails when no region can be found, with a sentence naming `needed_by`, the setting that
/// asked for AWS: every call would otherwise fail later with the SDK's "Missing Region"
/// dispatch failure, deep in a log line.
pub async fn sdk_config(
    region: Option<&str>,
    endpoint: Option<&str>,
    needed_by: &str,
) -> anyhow::Result<aws_config::SdkConfig> {
    // Bounded calls: a hung request must surface as an error (a 503, a retried pull), not hold
    // a sender or a worker forever. An attempt outlives SQS's longest long poll (20 s).
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .operation_attempt_timeout(std::time::Duration::from_secs(25))
        .operation_timeout(std::time::Duration::from_secs(60))
        .build();
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        anyhow::bail!(
            "{needed_by} needs an AWS region: set AWS_REGION (or a region in the AWS profile); none was found in the environment, the profile or the instance metadata"
        );
    }
    Ok(config)
}

/// An AWS SDK error as one line for a log or an answer: each cause in its chain once, without
/// the debug dump that the SDK's `DisplayErrorContext` appends, and what to set when the cause
/// is the setup (no credentials anywhere in the chain).
pub fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        next = err.source();
    }
    let mut said = causes.join(": ");
    if said.contains("no providers in chain provided credentials") {
        said.push_str(
            " (no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an ECS task role or an EC2 instance profile)",
        );
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    /// Each cause once, in order, with no debug dump; a missing-credentials cause says what to
    /// set.
    #[test]
    fn an_sdk_error_is_told_in_one_line() {
        let e = Layer(
            "dispatch failure",
            Some(Box::new(Layer(
                "other: no providers in chain provided credentials",
                Some(Box::new(Layer(
                    "no providers in chain provided credentials",
                    None,
                ))),
            ))),
        );
        assert_eq!(
            explain(&e),
            "dispatch failure: other: no providers in chain provided credentials (no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an ECS task role or an EC2 instance profile)"
        );
        let e = Layer(
            "service error",
            Some(Box::new(Layer("QueueDoesNotExist: no such queue", None))),
        );
        assert_eq!(
            explain(&e),
            "service error: QueueDoesNotExist: no such queue"
        );
    }
}
