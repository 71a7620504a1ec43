# Services use the FARGATE / FARGATE_SPOT capacity providers: they must not be created before
# the providers are associated with the cluster.
output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster_capacity_providers.this.cluster_name
}

output "cluster_arn" {
  description = "ARN of the ECS cluster."
  value       = aws_ecs_cluster.this.arn
  depends_on  = [aws_ecs_cluster_capacity_providers.this]
}

output "execution_role_arn" {
  description = "ARN of the task execution role shared by the api and worker task definitions."
  value       = aws_iam_role.execution.arn
}
