variable "name" {
  description = "Identifier of the DB instance and prefix of its resources, e.g. \"mailroom-prod\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,58}[a-z0-9]$", var.name))
    error_message = "name must be a valid RDS identifier (letters, digits, hyphens, starting with a letter)."
  }
}

variable "vpc_id" {
  description = "VPC of the database."
  type        = string

  validation {
    condition     = can(regex("^vpc-", var.vpc_id))
    error_message = "vpc_id must be a VPC ID (vpc-...)."
  }
}

variable "subnet_ids" {
  description = "Private subnets in at least two AZs."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "RDS needs subnets in at least two availability zones."
  }
}

variable "client_security_group_ids" {
  description = "Security groups (mailroom tasks or instances) allowed to connect on 5432."
  type        = list(string)
  default     = []
}

variable "engine_version" {
  description = "PostgreSQL major (or major.minor) version; minor upgrades are automatic."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^16(\\.[0-9]+)?$", var.engine_version))
    error_message = "engine_version must be PostgreSQL 16 (\"16\" or \"16.x\"), matching the parameter group family."
  }
}

variable "instance_class" {
  description = "DB instance class."
  type        = string
  default     = "db.t4g.micro"

  validation {
    condition     = startswith(var.instance_class, "db.")
    error_message = "instance_class must be an RDS instance class (db.*)."
  }
}

variable "database_name" {
  description = "Name of the database mailroom uses."
  type        = string
  default     = "mailroom"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.database_name))
    error_message = "database_name must start with a letter and hold only lower-case letters, digits and underscores."
  }
}

variable "master_username" {
  description = "Master user mailroom connects as (the password is generated)."
  type        = string
  default     = "mailroom"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,15}$", var.master_username)) && var.master_username != "admin"
    error_message = "master_username must be 1-16 lower-case letters, digits, underscores, starting with a letter, and not a reserved name."
  }
}

variable "allocated_storage_gib" {
  description = "Initial storage in GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.allocated_storage_gib >= 20
    error_message = "allocated_storage_gib must be at least 20 (the gp3 minimum)."
  }
}

variable "max_allocated_storage_gib" {
  description = "Storage autoscaling ceiling in GiB."
  type        = number
  default     = 100

  validation {
    condition     = var.max_allocated_storage_gib >= 20
    error_message = "max_allocated_storage_gib must be at least 20."
  }
}

variable "multi_az" {
  description = "Standby replica in a second AZ (prod)."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the instance (on in prod)."
  type        = bool
  default     = true
}

variable "skip_final_snapshot" {
  description = "Skip the snapshot on deletion (dev only)."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "KMS key for storage and Performance Insights."
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
