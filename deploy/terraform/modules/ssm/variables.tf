variable "prefix" {
  description = "Path prefix of the parameters, e.g. \"/mailroom/prod\"."
  type        = string

  validation {
    condition     = can(regex("^(/[A-Za-z0-9_.-]+)+$", var.prefix))
    error_message = "prefix must be an SSM path such as /mailroom/prod (no trailing slash)."
  }
}

variable "kms_key_arn" {
  description = "KMS key the SecureString parameters are encrypted with."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "database_url" {
  description = "PostgreSQL connection string (from the rds module)."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^postgres(ql)?://", var.database_url))
    error_message = "database_url must start with postgres:// or postgresql://."
  }
}

variable "create_redis_url" {
  description = "Create the REDIS_URL parameter (a flag, because count may not depend on the sensitive URL)."
  type        = bool
  default     = false
}

variable "create_smtp_url" {
  description = "Create the SMTP_URL parameter (delivery through an SMTP relay)."
  type        = bool
  default     = false
}

variable "redis_url" {
  description = "Redis connection string (from the redis module), required with create_redis_url."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.redis_url == null || can(regex("^rediss?://", var.redis_url))
    error_message = "redis_url must be null or start with redis:// or rediss://."
  }
}

variable "smtp_url" {
  description = "Placeholder SMTP relay URL to create the parameter with (the real one, with credentials, is written out of band)."
  type        = string
  default     = "smtp://set-me-out-of-band.invalid:587?tls=required"
  sensitive   = true

  validation {
    condition     = var.smtp_url == null || can(regex("^smtps?://", var.smtp_url))
    error_message = "smtp_url must be null or start with smtp:// or smtps://."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
