//! The AWS SDK configuration the SQS, SSM, Secrets Manager and SES clients share: credentials
//! from the default chain (environment, profile, ECS task role, instance profile), region and
//! endpoint from `AWS_REGION` and `AWS_ENDPOINT_URL` (the endpoint points tests at an emulator).

/// Loads the shared configuration; `region` and `endpoint` override what the environment says.
pub async fn sdk_config(region: Option<&str>, endpoint: Option<&str>) -> aws_config::SdkConfig {
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
    loader.load().await
}
