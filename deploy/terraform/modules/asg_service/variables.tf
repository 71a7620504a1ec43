variable "name" {
  description = "Name of the Auto Scaling group and prefix of its resources, e.g. \"mailroom-prod-api\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,46}[a-z0-9]$", var.name))
    error_message = "name must be 3-48 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "role" {
  description = "Which mailroom subcommand the instances run: \"api\", \"worker\" or \"serve\"."
  type        = string

  validation {
    condition     = contains(["api", "worker", "serve"], var.role)
    error_message = "role must be \"api\", \"worker\" or \"serve\"."
  }
}

variable "image_repository_url" {
  description = "ECR repository URL of mailroom's image, without a tag."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?/", var.image_repository_url))
    error_message = "image_repository_url must be an ECR repository URL (<account>.dkr.ecr.<region>.amazonaws.com/<name>)."
  }
}

variable "ecr_repository_arn" {
  description = "ARN of the same ECR repository, for the pull permission."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:ecr:", var.ecr_repository_arn))
    error_message = "ecr_repository_arn must be an ECR repository ARN."
  }
}

variable "initial_image_tag" {
  description = "Image tag written to the image-tag parameter at creation; CD overwrites it afterwards."
  type        = string
  default     = "latest"

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.initial_image_tag))
    error_message = "initial_image_tag must be a valid image tag."
  }
}

variable "task_policy_json" {
  description = "IAM policy (JSON) of what mailroom itself may do, as for the ecs_service task role."
  type        = string

  validation {
    condition     = can(jsondecode(var.task_policy_json).Statement)
    error_message = "task_policy_json must be an IAM policy document in JSON."
  }
}

variable "environment" {
  description = "Plain environment variables of the container. Never put secrets here."
  type        = map(string)
  default     = {}
}

variable "secret_parameters" {
  description = "Settings passed as `ssm:<name>` references that mailroom resolves at start-up: variable => SSM parameter name (starting with /)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for v in values(var.secret_parameters) : startswith(v, "/")])
    error_message = "Every secret_parameters value must be an SSM parameter name starting with /."
  }
}

variable "secret_parameter_arns" {
  description = "ARNs of the parameters in secret_parameters, for the instance role."
  type        = list(string)
  default     = []
}

variable "kms_key_arn" {
  description = "KMS key of the parameters and the root volumes."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "log_group_name" {
  description = "CloudWatch log group the container logs to."
  type        = string
}

variable "log_group_arn" {
  description = "ARN of that log group."
  type        = string
}

variable "ami_ssm_parameter" {
  description = "Public SSM parameter holding the AMI ID (Amazon Linux 2023 by default)."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

variable "instance_type" {
  description = "EC2 instance type."
  type        = string
  default     = "t3.small"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like an EC2 instance type (e.g. t3.small)."
  }
}

variable "root_volume_gib" {
  description = "Size of the encrypted root volume in GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.root_volume_gib >= 8
    error_message = "root_volume_gib must be at least 8."
  }
}

variable "container_port" {
  description = "Port mailroom listens on (its PORT setting); published on the instance."
  type        = number
  default     = 8080

  validation {
    condition     = var.container_port > 0 && var.container_port < 65536
    error_message = "container_port must be a TCP port number."
  }
}

variable "metrics_port" {
  description = "Separate Prometheus port (METRICS_PORT), or null."
  type        = number
  default     = null
}

variable "vpc_id" {
  description = "VPC of the instances."
  type        = string

  validation {
    condition     = can(regex("^vpc-", var.vpc_id))
    error_message = "vpc_id must be a VPC ID (vpc-...)."
  }
}

variable "vpc_cidr_block" {
  description = "CIDR of the VPC, where PostgreSQL and Redis are."
  type        = string

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr_block))
    error_message = "vpc_cidr_block must be a valid IPv4 CIDR."
  }
}

variable "subnet_ids" {
  description = "Private subnets of the instances."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must not be empty."
  }
}

variable "smtp_egress_ports" {
  description = "Outbound SMTP ports to open towards the relay (empty when DELIVERY=ses)."
  type        = list(number)
  default     = [587]

  validation {
    condition     = alltrue([for p in var.smtp_egress_ports : contains([25, 465, 587, 2525], p)])
    error_message = "smtp_egress_ports may contain only 25, 465, 587 and 2525."
  }
}

variable "load_balancer" {
  description = "ALB target group (target_type \"instance\") to attach the group to and the ALB's security group; null for none (worker)."
  type = object({
    target_group_arn  = string
    security_group_id = string
  })
  default = null
}

variable "min_size" {
  description = "Fewest instances."
  type        = number
  default     = 1

  validation {
    condition     = var.min_size >= 0
    error_message = "min_size must not be negative."
  }
}

variable "max_size" {
  description = "Most instances."
  type        = number
  default     = 4

  validation {
    condition     = var.max_size >= 1
    error_message = "max_size must be at least 1."
  }
}

variable "desired_capacity" {
  description = "Instances at creation; scaling adjusts it afterwards."
  type        = number
  default     = 2
}

variable "cpu_target_percent" {
  description = "Average CPU the group is scaled to keep, or null for no scaling policy."
  type        = number
  default     = 70

  validation {
    condition     = var.cpu_target_percent == null || try(var.cpu_target_percent > 0 && var.cpu_target_percent <= 100, false)
    error_message = "cpu_target_percent must be null or between 1 and 100."
  }
}

variable "tags" {
  description = "Tags added to every resource (and propagated to instances)."
  type        = map(string)
  default     = {}
}
