variable "bucket_name" {
  description = "Globally unique name of the archive bucket (S3_BUCKET_NAME)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 lower-case letters, digits, dots, hyphens)."
  }
}

variable "prefix" {
  description = "Key prefix mailroom writes under; the tiering rule applies to it (mailroom writes emails/YYYY/MM/DD/...)."
  type        = string
  default     = "emails/"
}

variable "kms_key_arn" {
  description = "KMS key the objects are encrypted with."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "transition_to_ia_days" {
  description = "Days before archived messages move to S3 Standard-IA."
  type        = number
  default     = 30

  validation {
    condition     = var.transition_to_ia_days >= 30
    error_message = "transition_to_ia_days must be at least 30 (the Standard-IA minimum)."
  }
}

variable "transition_to_glacier_days" {
  description = "Days before archived messages move to Glacier Instant Retrieval."
  type        = number
  default     = 90

  validation {
    condition     = var.transition_to_glacier_days >= 60
    error_message = "transition_to_glacier_days must be at least 60 (30 days after Standard-IA)."
  }
}

variable "expiration_days" {
  description = "Days after which archived messages are deleted, or null to keep them forever."
  type        = number
  default     = null

  validation {
    condition     = var.expiration_days == null || try(var.expiration_days >= 1, false)
    error_message = "expiration_days must be null or at least 1."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days an overwritten (redelivered) archive version is kept."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a non-empty bucket (dev only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
