"""socklab's services, one module each with a main(): echo, registry, client, collector, router."""
