variable "name" {
  description = "Name of the queue; the DLQ is <name>-dlq."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,76}$", var.name))
    error_message = "name must be 1-76 letters, digits, hyphens or underscores (the DLQ adds -dlq)."
  }
}

variable "visibility_timeout_secs" {
  description = "How long a received message stays hidden; above the longest delivery attempt (mailroom's VISIBILITY_TIMEOUT_SECS should match)."
  type        = number
  default     = 120

  validation {
    condition     = var.visibility_timeout_secs >= 0 && var.visibility_timeout_secs <= 43200
    error_message = "visibility_timeout_secs must be between 0 and 43200."
  }
}

variable "message_retention_secs" {
  description = "How long an undelivered message is kept in the main queue."
  type        = number
  default     = 345600 # 4 days

  validation {
    condition     = var.message_retention_secs >= 60 && var.message_retention_secs <= 1209600
    error_message = "message_retention_secs must be between 60 and 1209600."
  }
}

variable "max_receive_count" {
  description = "Receives before SQS moves a message to the DLQ; keep it above mailroom's MAX_ATTEMPTS (8)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be between 1 and 1000."
  }
}

variable "kms_key_arn" {
  description = "KMS key the queues are encrypted with."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
