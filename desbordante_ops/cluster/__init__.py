"""stage and prod on k3s: kube client helpers, render, deploy, rollouts, secrets, access, k3s."""
