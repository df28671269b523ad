"""The one place for each third-party client and process-wide service: HTTP
(`httpclient`, aiohttp), AMQP (`amqp`, aio-pika; `amqpurl`, its URLs without the client),
logging (`logs`), Prometheus metrics (`metrics`), owned background tasks (`tasks`) and
child processes (`procs`)."""
