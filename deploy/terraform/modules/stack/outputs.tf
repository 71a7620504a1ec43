output "api_url" {
  description = "Base URL of the API."
  value       = module.alb.url
}

output "alb_dns_name" {
  description = "DNS name of the load balancer (point your API domain at it)."
  value       = module.alb.dns_name
}

output "api_token_parameter" {
  description = "SSM parameter holding the API token (read it with aws ssm get-parameter --with-decryption)."
  value       = module.ssm.api_token_name
}

output "smtp_url_parameter" {
  description = "SSM parameter to write the SMTP relay URL to, when delivery is smtp."
  value       = module.ssm.smtp_url_name
}

output "queue_url" {
  description = "SQS queue URL."
  value       = module.sqs.queue_url
}

output "dlq_url" {
  description = "SQS dead-letter queue URL."
  value       = module.sqs.dlq_url
}

output "archive_bucket" {
  description = "S3 archive bucket."
  value       = module.archive.bucket_name
}

output "ecs_cluster_name" {
  description = "ECS cluster, when compute is ecs."
  value       = local.ecs ? module.cluster[0].cluster_name : null
}

output "ecs_services" {
  description = "role => ECS service name, when compute is ecs."
  value       = local.ecs ? tomap({ api = module.api_ecs[0].service_name, worker = module.worker_ecs[0].service_name }) : tomap({})
}

output "task_definition_families" {
  description = "role => task definition family (CD renders new revisions from the latest one)."
  value       = local.ecs ? tomap({ api = module.api_ecs[0].task_definition_family, worker = module.worker_ecs[0].task_definition_family }) : tomap({})
}

output "autoscaling_groups" {
  description = "role => Auto Scaling group, when compute is ec2."
  value       = local.ec2 ? tomap({ api = module.api_ec2[0].autoscaling_group_name, worker = module.worker_ec2[0].autoscaling_group_name }) : tomap({})
}

output "image_tag_parameters" {
  description = "role => SSM parameter with the image tag, when compute is ec2 (CD writes it)."
  value       = local.ec2 ? tomap({ api = module.api_ec2[0].image_tag_parameter_name, worker = module.worker_ec2[0].image_tag_parameter_name }) : tomap({})
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms."
  value       = module.monitoring.alarm_topic_arn
}

output "dashboard_name" {
  description = "CloudWatch dashboard."
  value       = module.monitoring.dashboard_name
}

output "static_site_url" {
  description = "URL of the dashboard pages on CloudFront, when enabled."
  value       = var.enable_static_site ? module.static_site[0].url : null
}

output "static_site_bucket" {
  description = "Bucket of the dashboard pages, when enabled."
  value       = var.enable_static_site ? module.static_site[0].bucket_name : null
}

output "static_site_distribution_id" {
  description = "CloudFront distribution of the dashboard pages, when enabled."
  value       = var.enable_static_site ? module.static_site[0].distribution_id : null
}
