data "aws_region" "current" {}

locals {
  alarm_actions = [aws_sns_topic.alarms.arn]
  # CPU alarms for whichever compute the environment runs: ECS services or Auto Scaling groups.
  ecs_cpu = { for role, service in var.ecs_service_names : role => service }
  asg_cpu = { for role, group in var.autoscaling_group_names : role => group }
}

# ---------------------------------------------------------------------------------------------
# Log groups, one per service, encrypted, with retention.
# ---------------------------------------------------------------------------------------------
resource "aws_cloudwatch_log_group" "service" {
  for_each          = toset(var.services)
  name              = "/mailroom/${var.name}/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

# ---------------------------------------------------------------------------------------------
# Alarm topic.
# ---------------------------------------------------------------------------------------------
resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = var.kms_key_arn
  tags              = var.tags
}

resource "aws_sns_topic_subscription" "email" {
  for_each  = toset(var.alarm_emails)
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

# ---------------------------------------------------------------------------------------------
# Alarms.
# ---------------------------------------------------------------------------------------------
resource "aws_cloudwatch_metric_alarm" "alb_5xx" {
  count               = var.load_balancer == null ? 0 : 1
  alarm_name          = "${var.name}-api-5xx"
  alarm_description   = "mailroom answers 5xx (or the ALB does for it): a store or queue is unreachable or tasks are failing. See docs/deployment.md#alarms."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HTTPCode_Target_5XX_Count"
  dimensions          = { LoadBalancer = var.load_balancer.arn_suffix }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = var.api_5xx_per_minute_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "alb_unhealthy" {
  count               = var.load_balancer == null ? 0 : 1
  alarm_name          = "${var.name}-api-unhealthy-targets"
  alarm_description   = "Some API targets fail /ready (store or queue unreachable)."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = var.load_balancer.arn_suffix, TargetGroup = var.load_balancer.target_group_arn_suffix }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  count               = var.sqs == null ? 0 : 1
  alarm_name          = "${var.name}-dlq-not-empty"
  alarm_description   = "Messages reached the SQS dead-letter queue: inspect with `mailroom dead-letters list`, fix, then redrive. A redrive leaves the copies here: delete them afterwards, or the alarm stays on until retention removes them (docs/aws.md, Dead letters)."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = var.sqs.dlq_name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "oldest_message_age" {
  count               = var.sqs == null ? 0 : 1
  alarm_name          = "${var.name}-queue-oldest-message-age"
  alarm_description   = "The oldest queued message waits longer than ${var.oldest_message_age_threshold_secs}s: workers are down, throttled or too few."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = var.sqs.queue_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = var.oldest_message_age_threshold_secs
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "ecs_cpu" {
  for_each            = local.ecs_cpu
  alarm_name          = "${var.name}-${each.key}-cpu-high"
  alarm_description   = "mailroom ${each.key} CPU stays above ${var.cpu_alarm_percent}% although it scales at 70%: it is at max_capacity."
  namespace           = "AWS/ECS"
  metric_name         = "CPUUtilization"
  dimensions          = { ClusterName = var.ecs_cluster_name, ServiceName = each.value }
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 10
  threshold           = var.cpu_alarm_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "asg_cpu" {
  for_each            = local.asg_cpu
  alarm_name          = "${var.name}-${each.key}-cpu-high"
  alarm_description   = "mailroom ${each.key} instances' CPU stays above ${var.cpu_alarm_percent}%."
  namespace           = "AWS/EC2"
  metric_name         = "CPUUtilization"
  dimensions          = { AutoScalingGroupName = each.value }
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 10
  threshold           = var.cpu_alarm_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "rds_cpu" {
  count               = var.rds_instance_identifier == null ? 0 : 1
  alarm_name          = "${var.name}-rds-cpu-high"
  alarm_description   = "The PostgreSQL instance's CPU stays above ${var.cpu_alarm_percent}%."
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  dimensions          = { DBInstanceIdentifier = var.rds_instance_identifier }
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 10
  threshold           = var.cpu_alarm_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# ---------------------------------------------------------------------------------------------
# Dashboard. Each widget is encoded on its own, so the optional groups are lists of strings and
# the conditionals between them have one type whatever the widgets' shapes.
# ---------------------------------------------------------------------------------------------
locals {
  region = data.aws_region.current.name

  alb_widgets = var.load_balancer == null ? [] : [
    jsonencode({
      type = "metric", width = 12, height = 6
      properties = {
        title  = "API requests and errors"
        region = local.region
        stat   = "Sum"
        period = 60
        metrics = [
          ["AWS/ApplicationELB", "RequestCount", "LoadBalancer", var.load_balancer.arn_suffix],
          [".", "HTTPCode_Target_2XX_Count", ".", "."],
          [".", "HTTPCode_Target_4XX_Count", ".", "."],
          [".", "HTTPCode_Target_5XX_Count", ".", "."],
          [".", "HTTPCode_ELB_5XX_Count", ".", "."],
        ]
      }
    }),
    jsonencode({
      type = "metric", width = 12, height = 6
      properties = {
        title  = "API latency (p50, p99)"
        region = local.region
        period = 60
        metrics = [
          ["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", var.load_balancer.arn_suffix, { stat = "p50" }],
          ["...", { stat = "p99" }],
        ]
      }
    }),
  ]

  sqs_widgets = var.sqs == null ? [] : [
    jsonencode({
      type = "metric", width = 12, height = 6
      properties = {
        title  = "Queue depth"
        region = local.region
        stat   = "Maximum"
        period = 60
        metrics = [
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", var.sqs.queue_name],
          [".", "ApproximateNumberOfMessagesNotVisible", ".", "."],
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", var.sqs.dlq_name, { label = "dead-letter queue" }],
        ]
      }
    }),
    jsonencode({
      type = "metric", width = 12, height = 6
      properties = {
        title   = "Oldest queued message (seconds)"
        region  = local.region
        stat    = "Maximum"
        period  = 60
        metrics = [["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", var.sqs.queue_name]]
      }
    }),
  ]

  ecs_widgets = length(local.ecs_cpu) == 0 ? [] : [
    jsonencode({
      type = "metric", width = 12, height = 6
      properties = {
        title   = "ECS CPU %"
        region  = local.region
        stat    = "Average"
        period  = 60
        metrics = [for role, service in local.ecs_cpu : ["AWS/ECS", "CPUUtilization", "ClusterName", var.ecs_cluster_name, "ServiceName", service, { label = role }]]
      }
    }),
    jsonencode({
      type = "metric", width = 12, height = 6
      properties = {
        title   = "Running tasks"
        region  = local.region
        stat    = "Average"
        period  = 60
        metrics = [for role, service in local.ecs_cpu : ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", var.ecs_cluster_name, "ServiceName", service, { label = role }]]
      }
    }),
  ]

  asg_widgets = length(local.asg_cpu) == 0 ? [] : [
    jsonencode({
      type = "metric", width = 12, height = 6
      properties = {
        title   = "EC2 CPU %"
        region  = local.region
        stat    = "Average"
        period  = 60
        metrics = [for role, group in local.asg_cpu : ["AWS/EC2", "CPUUtilization", "AutoScalingGroupName", group, { label = role }]]
      }
    }),
  ]

  log_widgets = [
    jsonencode({
      type = "log", width = 24, height = 6
      properties = {
        title  = "Errors in mailroom logs"
        region = local.region
        query  = "SOURCE ${join(" | SOURCE ", [for g in aws_cloudwatch_log_group.service : "'${g.name}'"])} | fields @timestamp, `log.level`, message | filter `log.level` = 'ERROR' or `log.level` = 'WARN' | sort @timestamp desc | limit 50"
        view   = "table"
      }
    }),
  ]

  widgets = concat(local.alb_widgets, local.sqs_widgets, local.ecs_widgets, local.asg_widgets, local.log_widgets)
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.name
  dashboard_body = "{\"widgets\": [${join(",", local.widgets)}]}"
}
