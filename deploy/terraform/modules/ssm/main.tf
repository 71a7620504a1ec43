# The API token clients present. Generated once; rotate it by writing a new value to the parameter
# (aws ssm put-parameter --overwrite): mailroom reads SSM_TOKEN_PARAMETER with a cache and picks up
# the new value without a restart, and Terraform ignores the change.
resource "random_password" "api_token" {
  length  = 48
  special = false
}

resource "aws_ssm_parameter" "api_token" {
  name        = "${var.prefix}/api-token"
  description = "mailroom API token (SSM_TOKEN_PARAMETER)"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  value       = random_password.api_token.result
  tags        = var.tags

  lifecycle {
    ignore_changes = [value]
  }
}

resource "aws_ssm_parameter" "database_url" {
  name        = "${var.prefix}/database-url"
  description = "mailroom DATABASE_URL (PostgreSQL connection string with credentials)"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  value       = var.database_url
  tags        = var.tags
}

resource "aws_ssm_parameter" "redis_url" {
  count       = var.create_redis_url ? 1 : 0
  name        = "${var.prefix}/redis-url"
  description = "mailroom REDIS_URL (with its AUTH token)"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  value       = var.redis_url
  tags        = var.tags
}

resource "aws_ssm_parameter" "smtp_url" {
  count       = var.create_smtp_url ? 1 : 0
  name        = "${var.prefix}/smtp-url"
  description = "mailroom SMTP_URL (relay with credentials); set the real value out of band"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  value       = var.smtp_url
  tags        = var.tags

  lifecycle {
    ignore_changes = [value]
  }
}
