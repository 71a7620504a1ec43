output "api_token_name" {
  description = "Name of the API token parameter (SSM_TOKEN_PARAMETER)."
  value       = aws_ssm_parameter.api_token.name
}

output "api_token_arn" {
  description = "ARN of the API token parameter."
  value       = aws_ssm_parameter.api_token.arn
}

output "database_url_name" {
  description = "Name of the DATABASE_URL parameter."
  value       = aws_ssm_parameter.database_url.name
}

output "database_url_arn" {
  description = "ARN of the DATABASE_URL parameter (for task definition secrets)."
  value       = aws_ssm_parameter.database_url.arn
}

output "redis_url_name" {
  description = "Name of the REDIS_URL parameter, or null."
  value       = try(aws_ssm_parameter.redis_url[0].name, null)
}

output "redis_url_arn" {
  description = "ARN of the REDIS_URL parameter, or null."
  value       = try(aws_ssm_parameter.redis_url[0].arn, null)
}

output "smtp_url_name" {
  description = "Name of the SMTP_URL parameter, or null."
  value       = try(aws_ssm_parameter.smtp_url[0].name, null)
}

output "smtp_url_arn" {
  description = "ARN of the SMTP_URL parameter, or null."
  value       = try(aws_ssm_parameter.smtp_url[0].arn, null)
}

output "parameter_arns" {
  description = "ARNs of every parameter this module made (for the execution and instance roles)."
  value = compact([
    aws_ssm_parameter.api_token.arn,
    aws_ssm_parameter.database_url.arn,
    try(aws_ssm_parameter.redis_url[0].arn, ""),
    try(aws_ssm_parameter.smtp_url[0].arn, ""),
  ])
}
