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
