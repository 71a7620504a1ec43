variable "name" {
  description = "Name prefix of the log groups, alarms, topic and dashboard, e.g. \"mailroom-prod\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.name))
    error_message = "name must be 3-40 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "services" {
  description = "Services that get a log group /mailroom/<name>/<service>."
  type        = list(string)
  default     = ["api", "worker"]

  validation {
    condition     = length(var.services) > 0 && alltrue([for s in var.services : can(regex("^[a-z][a-z0-9-]*$", s))])
    error_message = "services must be a non-empty list of lower-case names."
  }
}

variable "kms_key_arn" {
  description = "KMS key for the log groups and the alarm topic."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "log_retention_days" {
  description = "Days to keep mailroom's logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "alarm_emails" {
  description = "E-mail addresses subscribed to the alarm topic (each must confirm)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.alarm_emails : can(regex("^[^@\\s]+@[^@\\s]+$", e))])
    error_message = "alarm_emails must hold e-mail addresses."
  }
}

variable "load_balancer" {
  description = "ARN suffixes of the load balancer and the API target group (alb module outputs), or null without one."
  type = object({
    arn_suffix              = string
    target_group_arn_suffix = string
  })
  default = null
}

variable "sqs" {
  description = "Names of the main queue and the dead-letter queue (sqs module outputs), or null when the queue is the database."
  type = object({
    queue_name = string
    dlq_name   = string
  })
  default = null
}

variable "ecs_cluster_name" {
  description = "ECS cluster of the services in ecs_service_names."
  type        = string
  default     = null
}

variable "ecs_service_names" {
  description = "ECS services to watch: role => service name."
  type        = map(string)
  default     = {}
}

variable "autoscaling_group_names" {
  description = "Auto Scaling groups to watch: role => group name."
  type        = map(string)
  default     = {}
}

variable "rds_instance_identifier" {
  description = "RDS instance to watch, or null."
  type        = string
  default     = null
}

variable "api_5xx_per_minute_threshold" {
  description = "5xx answers per minute that count as an error minute (3 of 5 minutes alarm)."
  type        = number
  default     = 5

  validation {
    condition     = var.api_5xx_per_minute_threshold >= 0
    error_message = "api_5xx_per_minute_threshold must not be negative."
  }
}

variable "oldest_message_age_threshold_secs" {
  description = "Age of the oldest queued message that raises an alarm."
  type        = number
  default     = 900

  validation {
    condition     = var.oldest_message_age_threshold_secs >= 60
    error_message = "oldest_message_age_threshold_secs must be at least 60."
  }
}

variable "cpu_alarm_percent" {
  description = "CPU utilisation that raises an alarm after 10 minutes."
  type        = number
  default     = 85

  validation {
    condition     = var.cpu_alarm_percent > 0 && var.cpu_alarm_percent <= 100
    error_message = "cpu_alarm_percent must be between 1 and 100."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
