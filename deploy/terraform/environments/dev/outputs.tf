output "api_url" {
  description = "Base URL of the API."
  value       = module.mailroom.api_url
}

output "api_token_parameter" {
  description = "SSM parameter holding the API token."
  value       = module.mailroom.api_token_parameter
}

output "smtp_url_parameter" {
  description = "SSM parameter for the SMTP relay URL (delivery = smtp)."
  value       = module.mailroom.smtp_url_parameter
}

output "queue_url" {
  description = "SQS queue URL."
  value       = module.mailroom.queue_url
}

output "dlq_url" {
  description = "SQS dead-letter queue URL."
  value       = module.mailroom.dlq_url
}

output "archive_bucket" {
  description = "S3 archive bucket."
  value       = module.mailroom.archive_bucket
}

output "ecs_cluster_name" {
  description = "ECS cluster (compute = ecs)."
  value       = module.mailroom.ecs_cluster_name
}

output "ecs_services" {
  description = "role => ECS service (compute = ecs)."
  value       = module.mailroom.ecs_services
}

output "task_definition_families" {
  description = "role => task definition family (compute = ecs)."
  value       = module.mailroom.task_definition_families
}

output "autoscaling_groups" {
  description = "role => Auto Scaling group (compute = ec2)."
  value       = module.mailroom.autoscaling_groups
}

output "image_tag_parameters" {
  description = "role => image tag parameter (compute = ec2)."
  value       = module.mailroom.image_tag_parameters
}

output "dashboard_name" {
  description = "CloudWatch dashboard."
  value       = module.mailroom.dashboard_name
}
