output "service_name" {
  description = "Name of the ECS service."
  value       = aws_ecs_service.this.name
}

output "task_definition_family" {
  description = "Family of the task definition; CD registers new revisions in it."
  value       = aws_ecs_task_definition.this.family
}

output "task_definition_arn" {
  description = "ARN of the revision this module registered."
  value       = aws_ecs_task_definition.this.arn
}

output "container_name" {
  description = "Name of the container in the task definition (for the CD render step)."
  value       = local.container_name
}

output "task_role_arn" {
  description = "ARN of this service's task role."
  value       = aws_iam_role.task.arn
}

output "security_group_id" {
  description = "Security group of the tasks; RDS and Redis admit it."
  value       = aws_security_group.task.id
}
