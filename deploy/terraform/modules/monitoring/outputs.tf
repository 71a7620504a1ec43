output "log_group_names" {
  description = "Log group name per service."
  value       = { for s, g in aws_cloudwatch_log_group.service : s => g.name }
}

output "log_group_arns" {
  description = "Log group ARN per service."
  value       = { for s, g in aws_cloudwatch_log_group.service : s => g.arn }
}

output "alarm_topic_arn" {
  description = "SNS topic the alarms notify (subscribe a pager or chat integration to it)."
  value       = aws_sns_topic.alarms.arn
}

output "dashboard_name" {
  description = "Name of the CloudWatch dashboard."
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}
