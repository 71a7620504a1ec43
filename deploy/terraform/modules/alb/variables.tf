variable "name" {
  description = "Name of the load balancer and target group (at most 32 characters), e.g. \"mailroom-prod\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC the load balancer and its target group belong to."
  type        = string

  validation {
    condition     = can(regex("^vpc-", var.vpc_id))
    error_message = "vpc_id must be a VPC ID (vpc-...)."
  }
}

variable "vpc_cidr_block" {
  description = "CIDR of the VPC; the load balancer may only send traffic there."
  type        = string

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr_block))
    error_message = "vpc_cidr_block must be a valid IPv4 CIDR."
  }
}

variable "subnet_ids" {
  description = "Subnets of the load balancer: public ones for an internet-facing ALB, in at least two AZs."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "An application load balancer needs subnets in at least two availability zones."
  }
}

variable "internal" {
  description = "Make the load balancer internal (reachable only from inside the VPC and peered networks)."
  type        = bool
  default     = false
}

variable "allowed_cidr_blocks" {
  description = "Client networks allowed to reach the load balancer on 80/443."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.allowed_cidr_blocks : can(cidrnetmask(c))])
    error_message = "Every entry of allowed_cidr_blocks must be a valid IPv4 CIDR."
  }
}

variable "certificate_arn" {
  description = "ACM certificate for the HTTPS listener. When null, port 80 forwards to the targets (dev only); when set, port 80 redirects to 443."
  type        = string
  default     = null

  validation {
    condition     = var.certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN or null."
  }
}

variable "target_port" {
  description = "Port mailroom listens on in the targets (its PORT setting)."
  type        = number
  default     = 8080

  validation {
    condition     = var.target_port > 0 && var.target_port < 65536
    error_message = "target_port must be a TCP port number."
  }
}

variable "target_type" {
  description = "\"ip\" for ECS Fargate tasks, \"instance\" for the EC2 Auto Scaling group."
  type        = string
  default     = "ip"

  validation {
    condition     = contains(["ip", "instance"], var.target_type)
    error_message = "target_type must be \"ip\" or \"instance\"."
  }
}

variable "deregistration_delay_secs" {
  description = "Seconds the ALB drains a target before removal; keep it above mailroom's request timeout and below SHUTDOWN_GRACE_SECS."
  type        = number
  default     = 20

  validation {
    condition     = var.deregistration_delay_secs >= 0 && var.deregistration_delay_secs <= 3600
    error_message = "deregistration_delay_secs must be between 0 and 3600."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the load balancer (on in prod)."
  type        = bool
  default     = true
}

variable "access_logs_bucket" {
  description = "S3 bucket for ALB access logs (it must allow the regional ELB account to write); null disables access logs."
  type        = string
  default     = null
}

variable "enable_waf" {
  description = "Put an AWS WAF web ACL (managed baseline rules and a per-client rate limit) in front of the load balancer."
  type        = bool
  default     = true
}

variable "waf_rate_limit_per_5min" {
  description = "Requests one client IP may make in 5 minutes before WAF blocks it."
  type        = number
  default     = 6000

  validation {
    condition     = var.waf_rate_limit_per_5min >= 100
    error_message = "waf_rate_limit_per_5min must be at least 100 (the WAF minimum)."
  }
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the WAF log group."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "log_retention_days" {
  description = "Days to keep WAF logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
