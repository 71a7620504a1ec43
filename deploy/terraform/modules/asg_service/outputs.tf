output "autoscaling_group_name" {
  description = "Name of the Auto Scaling group (CD starts instance refreshes on it)."
  value       = aws_autoscaling_group.this.name
}

output "image_tag_parameter_name" {
  description = "SSM parameter holding the image tag the instances run (CD overwrites it)."
  value       = aws_ssm_parameter.image_tag.name
}

output "launch_template_id" {
  description = "ID of the launch template."
  value       = aws_launch_template.this.id
}

output "instance_role_arn" {
  description = "ARN of the instance role."
  value       = aws_iam_role.instance.arn
}

output "security_group_id" {
  description = "Security group of the instances; RDS and Redis admit it."
  value       = aws_security_group.instance.id
}
