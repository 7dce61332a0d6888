"""The transform stage: the Quix Streams application that validates each raw event
against its JSON Schema, normalizes it and routes every failure to the dead-letter topic:
the application and its settings (stage), the per-event step (transformer), its lanes and
reason codes (lanes), the schema registry (registry) over the schemas topic (schematopic)
and the validators (schemas).

It imports only pipelines.core and writes only to Kafka.
"""
