"""The local stack: api, worker and flower against this machine's PostgreSQL and RabbitMQ.

One interface (`stack.LocalStack`) with two kinds behind it, chosen once (`stacks.open_stack`):
processes under supervisord, or containers of the built image.
"""
