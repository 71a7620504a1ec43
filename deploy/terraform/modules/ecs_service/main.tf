data "aws_region" "current" {}

locals {
  container_name = "mailroom"
  # Whether the object is null is known at plan time even while its ARNs are not.
  has_lb = var.load_balancer != null

  # A separate metrics port is mailroom's METRICS_PORT: it listens there only when told to.
  env_vars = merge(
    var.environment,
    var.metrics_port == null ? tomap({}) : tomap({ METRICS_PORT = tostring(var.metrics_port) }),
  )
  environment = [for k in sort(keys(local.env_vars)) : { name = k, value = local.env_vars[k] }]
  secrets     = [for k in sort(keys(var.secrets)) : { name = k, valueFrom = var.secrets[k] }]

  port_mappings = concat(
    [{ containerPort = var.container_port, protocol = "tcp" }],
    var.metrics_port == null ? [] : [{ containerPort = var.metrics_port, protocol = "tcp" }],
  )
}

# ---------------------------------------------------------------------------------------------
# Task role: what the mailroom process itself may do (and nothing else).
# ---------------------------------------------------------------------------------------------
data "aws_iam_policy_document" "task_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.task_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "task" {
  name   = "mailroom-${var.role}"
  role   = aws_iam_role.task.id
  policy = var.task_policy_json
}

# ---------------------------------------------------------------------------------------------
# Network: the task accepts its port from the load balancer only, and talks to HTTPS (AWS APIs),
# SMTP relays and, inside the VPC, PostgreSQL and Redis.
# ---------------------------------------------------------------------------------------------
resource "aws_security_group" "task" {
  name        = "${var.name}-task"
  description = "mailroom ${var.role} tasks"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-task" })
}

resource "aws_vpc_security_group_ingress_rule" "from_alb" {
  count                        = local.has_lb ? 1 : 0
  security_group_id            = aws_security_group.task.id
  description                  = "HTTP from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  referenced_security_group_id = var.load_balancer.security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "metrics" {
  for_each                     = toset(var.metrics_scraper_security_group_ids)
  security_group_id            = aws_security_group.task.id
  description                  = "Prometheus scrapes from ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = coalesce(var.metrics_port, var.container_port)
  to_port                      = coalesce(var.metrics_port, var.container_port)
  referenced_security_group_id = each.value
}

# AWS APIs (SQS, SSM, SES, ECR, CloudWatch Logs) are public endpoints reached through NAT, so 443
# cannot be narrowed to addresses; the group opens only this port and the relay's, nothing else.
#trivy:ignore:AVD-AWS-0104
resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.task.id
  description       = "HTTPS to AWS APIs (SQS, S3, SSM, SES, ECR) through NAT or endpoints"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# An external SMTP relay (or a provider's SMTP endpoint) has no fixed address range known here.
#trivy:ignore:AVD-AWS-0104
resource "aws_vpc_security_group_egress_rule" "smtp" {
  for_each          = toset([for p in var.smtp_egress_ports : tostring(p)])
  security_group_id = aws_security_group.task.id
  description       = "SMTP relay on port ${each.value}"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "in_vpc" {
  for_each          = toset(["5432", "6379"])
  security_group_id = aws_security_group.task.id
  description       = each.value == "5432" ? "PostgreSQL inside the VPC" : "Redis inside the VPC"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = var.vpc_cidr_block
}

# ---------------------------------------------------------------------------------------------
# Task definition and service.
# ---------------------------------------------------------------------------------------------
# SSM_TOKEN_PARAMETER holds the *name* of the token's SecureString, which mailroom reads itself;
# the token never appears in the task definition. Secret values go through `secrets` only.
#trivy:ignore:AVD-AWS-0036
resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = var.execution_role_arn
  task_role_arn            = aws_iam_role.task.arn
  tags                     = var.tags

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # The root filesystem is read-only; DATA_DIR and /tmp are task-scoped scratch volumes.
  volume {
    name = "data"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([{
    name                   = local.container_name
    image                  = var.image
    command                = [var.role]
    essential              = true
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    stopTimeout            = var.stop_timeout_secs
    portMappings           = local.port_mappings
    environment            = local.environment
    secrets                = local.secrets
    mountPoints = [
      { sourceVolume = "data", containerPath = "/data", readOnly = false },
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
    ]
    linuxParameters = { initProcessEnabled = true }
    healthCheck = {
      command     = ["CMD", "/usr/local/bin/mailroom", "healthcheck"]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = var.role
      }
    }
  }])
}

resource "aws_ecs_service" "this" {
  name                               = var.name
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = var.desired_count
  platform_version                   = "LATEST"
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = local.has_lb ? 30 : null
  enable_execute_command             = false
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  wait_for_steady_state              = var.wait_for_steady_state
  tags                               = var.tags

  capacity_provider_strategy {
    capacity_provider = var.use_fargate_spot ? "FARGATE_SPOT" : "FARGATE"
    weight            = 1
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.task.id]
    assign_public_ip = false
  }

  # A deployment whose tasks keep failing their health checks stops and rolls back by itself.
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  dynamic "load_balancer" {
    for_each = local.has_lb ? [1] : []
    content {
      target_group_arn = var.load_balancer.target_group_arn
      container_name   = local.container_name
      container_port   = var.container_port
    }
  }

  lifecycle {
    # Auto Scaling owns the count; the CD pipeline registers and deploys new task definition
    # revisions (rendered from the latest one this module registered).
    ignore_changes = [desired_count, task_definition]
  }
}

# ---------------------------------------------------------------------------------------------
# Auto Scaling: CPU target tracking (api) and/or SQS backlog per running task (worker).
# ---------------------------------------------------------------------------------------------
resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.this.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_capacity
  max_capacity       = var.max_capacity
}

resource "aws_appautoscaling_policy" "cpu" {
  count              = var.cpu_target_percent == null ? 0 : 1
  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "backlog" {
  count              = var.backlog_scaling == null ? 0 : 1
  name               = "${var.name}-backlog-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.backlog_scaling.messages_per_task
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    # backlog per task = visible messages / running tasks (at least 1).
    customized_metric_specification {
      metrics {
        id          = "visible"
        return_data = false
        metric_stat {
          stat = "Sum"
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"
            dimensions {
              name  = "QueueName"
              value = var.backlog_scaling.queue_name
            }
          }
        }
      }

      metrics {
        id          = "tasks"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"
            dimensions {
              name  = "ClusterName"
              value = var.cluster_name
            }
            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.this.name
            }
          }
        }
      }

      metrics {
        id          = "backlog_per_task"
        label       = "Visible messages per running task"
        expression  = "visible / IF(tasks > 0, tasks, 1)"
        return_data = true
      }
    }
  }
}
