data "aws_region" "current" {}
data "aws_partition" "current" {}

data "aws_ssm_parameter" "ami" {
  name = var.ami_ssm_parameter
}

locals {
  # Whether the object is null is known at plan time even while its ARNs are not.
  has_lb   = var.load_balancer != null
  registry = split("/", var.image_repository_url)[0]
  # Secrets are handed to mailroom as `ssm:/name` references, which it resolves at start-up with
  # the instance role; no secret value is written to user data or to disk.
  # A separate metrics port is mailroom's METRICS_PORT: it listens there only when told to.
  env_vars = merge(
    var.environment,
    var.metrics_port == null ? tomap({}) : tomap({ METRICS_PORT = tostring(var.metrics_port) }),
  )
  env_lines = concat(
    [for k in sort(keys(local.env_vars)) : "${k}=${local.env_vars[k]}"],
    [for k in sort(keys(var.secret_parameters)) : "${k}=ssm:${var.secret_parameters[k]}"],
  )
}

# The image tag the instances run. CD overwrites it and starts an instance refresh; Terraform only
# creates it. A commit SHA is not a secret, so it is a plain String the deploy role can write
# without access to the environment's key.
resource "aws_ssm_parameter" "image_tag" {
  #checkov:skip=CKV2_AWS_34:holds only an image tag (a commit SHA), which is public in the repository; encrypting it would give the deploy role access to the environment key.
  name        = "/mailroom/${var.name}/image-tag"
  description = "Tag of the mailroom image the ${var.name} instances run"
  type        = "String"
  value       = var.initial_image_tag
  tags        = var.tags

  lifecycle {
    ignore_changes = [value]
  }
}

# ---------------------------------------------------------------------------------------------
# Instance role: what mailroom may do (task_policy_json) plus pulling the image, reading its tag
# and parameters, writing logs, and Session Manager instead of SSH.
# ---------------------------------------------------------------------------------------------
data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "instance" {
  name               = "${var.name}-instance"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "app" {
  name   = "mailroom-${var.role}"
  role   = aws_iam_role.instance.id
  policy = var.task_policy_json
}

data "aws_iam_policy_document" "host" {
  statement {
    sid       = "PullImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
    resources = [var.ecr_repository_arn]
  }

  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # GetAuthorizationToken has no resource-level permissions.
  }

  statement {
    sid       = "ReadImageTagAndSecrets"
    actions   = ["ssm:GetParameter", "ssm:GetParameters"]
    resources = concat([aws_ssm_parameter.image_tag.arn], var.secret_parameter_arns)
  }

  statement {
    sid       = "Decrypt"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }

  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${var.log_group_arn}:*"]
  }
}

resource "aws_iam_role_policy" "host" {
  name   = "host"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.host.json
}

resource "aws_iam_role_policy_attachment" "ssm_core" {
  role       = aws_iam_role.instance.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "this" {
  name = "${var.name}-instance"
  role = aws_iam_role.instance.name
  tags = var.tags
}

# ---------------------------------------------------------------------------------------------
# Security group.
# ---------------------------------------------------------------------------------------------
resource "aws_security_group" "instance" {
  name        = "${var.name}-instance"
  description = "mailroom ${var.role} instances"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-instance" })
}

resource "aws_vpc_security_group_ingress_rule" "from_alb" {
  count                        = local.has_lb ? 1 : 0
  security_group_id            = aws_security_group.instance.id
  description                  = "HTTP from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  referenced_security_group_id = var.load_balancer.security_group_id
}

# AWS APIs (SQS, SSM, SES, ECR, CloudWatch Logs) are public endpoints reached through NAT, so 443
# cannot be narrowed to addresses; the group opens only this port and the relay's, nothing else.
#trivy:ignore:AVD-AWS-0104
resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.instance.id
  description       = "HTTPS to AWS APIs, ECR and the OS package mirrors"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# An external SMTP relay (or a provider's SMTP endpoint) has no fixed address range known here.
#trivy:ignore:AVD-AWS-0104
resource "aws_vpc_security_group_egress_rule" "smtp" {
  for_each          = toset([for p in var.smtp_egress_ports : tostring(p)])
  security_group_id = aws_security_group.instance.id
  description       = "SMTP relay on port ${each.value}"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "in_vpc" {
  for_each          = toset(["5432", "6379"])
  security_group_id = aws_security_group.instance.id
  description       = each.value == "5432" ? "PostgreSQL inside the VPC" : "Redis inside the VPC"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = var.vpc_cidr_block
}

# ---------------------------------------------------------------------------------------------
# Launch template and Auto Scaling group.
# ---------------------------------------------------------------------------------------------
resource "aws_launch_template" "this" {
  #checkov:skip=CKV_AWS_341:the container runs on Docker's bridge network, one hop past the instance, and gets the instance role's credentials through IMDSv2 (tokens required); AWS documents a hop limit of 2 for containers on EC2.
  name_prefix            = "${var.name}-"
  image_id               = data.aws_ssm_parameter.ami.value
  instance_type          = var.instance_type
  vpc_security_group_ids = [aws_security_group.instance.id]
  update_default_version = true
  ebs_optimized          = true
  tags                   = var.tags

  user_data = base64encode(templatefile("${path.module}/user_data.sh.tftpl", {
    region              = data.aws_region.current.name
    registry            = local.registry
    image_repository    = var.image_repository_url
    image_tag_parameter = aws_ssm_parameter.image_tag.name
    role                = var.role
    port                = var.container_port
    metrics_port        = var.metrics_port == null ? "" : tostring(var.metrics_port)
    log_group           = var.log_group_name
    env_file            = join("\n", local.env_lines)
  }))

  iam_instance_profile {
    arn = aws_iam_instance_profile.this.arn
  }

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
    # 2: the container runs on Docker's bridge network, one hop past the instance, and reaches
    # the instance role's credentials through IMDSv2 only if the token's reply can travel it.
    http_put_response_hop_limit = 2
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.root_volume_gib
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = var.name })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = var.tags
  }
}

resource "aws_autoscaling_group" "this" {
  name                      = var.name
  vpc_zone_identifier       = var.subnet_ids
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity
  health_check_type         = local.has_lb ? "ELB" : "EC2"
  health_check_grace_period = 120
  target_group_arns         = local.has_lb ? [var.load_balancer.target_group_arn] : []
  default_instance_warmup   = 120
  wait_for_capacity_timeout = "10m"

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  # A new launch template version (new AMI or settings) rolls through the group; CD starts the
  # same refresh after it changes the image tag parameter.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 200
      instance_warmup        = 120
      auto_rollback          = true
    }
  }

  dynamic "tag" {
    for_each = merge(var.tags, { Name = var.name })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

resource "aws_autoscaling_policy" "cpu" {
  count                  = var.cpu_target_percent == null ? 0 : 1
  name                   = "${var.name}-cpu"
  autoscaling_group_name = aws_autoscaling_group.this.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value = var.cpu_target_percent
    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
  }
}
