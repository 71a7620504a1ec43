variable "region" {
  description = "AWS region of this environment."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1."
  }
}

variable "ecr_repository_name" {
  description = "Name of the ECR repository created by deploy/terraform/bootstrap."
  type        = string
  default     = "mailroom"
}

variable "image_tag" {
  description = "Image tag of the first deployment (the CD pipeline deploys later ones)."
  type        = string
  default     = "latest"
}

variable "compute" {
  description = "\"ecs\" (Fargate) or \"ec2\" (Auto Scaling groups)."
  type        = string
  default     = "ecs"
}

variable "certificate_arn" {
  description = "ACM certificate for the API's HTTPS listener; prod serves HTTPS only."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "prod needs an ACM certificate ARN: the API token must never cross the internet in clear."
  }
}

variable "delivery" {
  description = "\"ses\" or \"smtp\"."
  type        = string
  default     = "ses"
}

variable "default_from" {
  description = "DEFAULT_FROM: sender address of compat messages, e.g. noreply@<your domain>."
  type        = string
}

variable "compat_recipient" {
  description = "COMPAT_RECIPIENT, or null to only archive /api/email messages."
  type        = string
  default     = null
}

variable "ses_identity_arns" {
  description = "SES identities the workers may send as."
  type        = list(string)
  default     = []
}

variable "alarm_emails" {
  description = "Addresses that receive the alarms."
  type        = list(string)
  default     = []
}

variable "allowed_cidr_blocks" {
  description = "Client networks allowed to reach the API."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}
