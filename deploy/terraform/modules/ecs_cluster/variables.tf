variable "name" {
  description = "Name of the ECS cluster and prefix of its roles, e.g. \"mailroom-prod\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.name))
    error_message = "name must be 3-40 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "ecr_repository_arn" {
  description = "ECR repository the tasks pull mailroom's image from."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:ecr:", var.ecr_repository_arn))
    error_message = "ecr_repository_arn must be an ECR repository ARN."
  }
}

variable "log_group_arns" {
  description = "CloudWatch log groups the containers write to (from the monitoring module)."
  type        = list(string)

  validation {
    condition     = length(var.log_group_arns) > 0 && alltrue([for a in var.log_group_arns : can(regex("^arn:aws[a-z-]*:logs:", a))])
    error_message = "log_group_arns must be a non-empty list of log group ARNs."
  }
}

variable "ssm_parameter_arns" {
  description = "SSM parameters the task definitions hand to containers as `secrets`."
  type        = list(string)

  validation {
    condition     = length(var.ssm_parameter_arns) > 0 && alltrue([for a in var.ssm_parameter_arns : can(regex("^arn:aws[a-z-]*:ssm:", a))])
    error_message = "ssm_parameter_arns must be a non-empty list of SSM parameter ARNs."
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

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
