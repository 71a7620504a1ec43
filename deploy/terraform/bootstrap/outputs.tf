output "state_bucket" {
  description = "Bucket for the environments' remote state (backend.hcl: bucket)."
  value       = aws_s3_bucket.state.id
}

output "ecr_repository_url" {
  description = "Repository to push mailroom's image to."
  value       = module.ecr.repository_url
}

output "deploy_role_arn" {
  description = "Role GitHub Actions assumes to deploy (repository variable AWS_DEPLOY_ROLE_ARN)."
  value       = try(aws_iam_role.deploy[0].arn, null)
}
