"""The seed's example: a SaaS for fitness studios (Mindbody, Stripe, Twilio and four routes)."""

MINDBODY = {
    "name": "mindbody",
    "displayName": "Mindbody",
    "description": "Class schedules and bookings",
    "baseUrl": "https://api.mindbodyonline.com/public/v6",
    "auth": {"type": "bearer", "secret": "{{env.MINDBODY_TOKEN}}"},
    "endpoints": [
        {"name": "listClasses", "method": "GET", "path": "/class/classes", "description": "Upcoming classes",
         "query": {"StartDateTime": "{{params.from}}", "EndDateTime": "{{params.to}}"}},
        {"name": "bookClass", "method": "POST", "path": "/class/addclienttoclass",
         "body": {"ClientId": "{{params.clientId}}", "ClassId": "{{params.classId}}"}},
        {"name": "siteStats", "method": "GET", "path": "/site/sites/{siteId}/stats",
         "headers": {"SiteId": "{{params.siteId}}"}},
    ],
}

STRIPE = {
    "name": "stripe",
    "displayName": "Stripe",
    "description": "Membership payments",
    "baseUrl": "https://api.stripe.com/v1",
    "auth": {"type": "bearer", "secret": "{{env.STRIPE_SECRET_KEY}}"},
    "endpoints": [
        {"name": "createSubscription", "method": "post", "path": "/subscriptions",
         "body": {"customer": "{{params.customer}}", "items": [{"price": "{{params.price}}"}]}},
        {"name": "listSubscriptions", "method": "get", "path": "/subscriptions",
         "query": {"status": "active", "limit": "{{params.limit}}"}},
    ],
}

TWILIO = {
    "name": "twilio",
    "displayName": "Twilio",
    "description": "SMS class reminders",
    "baseUrl": "https://api.twilio.com/2010-04-01",
    "auth": {"type": "basic", "username": "{{env.TWILIO_ACCOUNT_SID}}", "secret": "{{env.TWILIO_AUTH_TOKEN}}"},
    "endpoints": [
        {"name": "sendSms", "method": "POST", "path": "/Accounts/{accountSid}/Messages.json",
         "body": {"To": "{{params.to}}", "From": "{{env.TWILIO_FROM}}", "Body": "{{params.text}}"}},
    ],
}

CLASSES = {
    "path": "/classes",
    "method": "GET",
    "description": "List upcoming classes",
    "requireAuth": False,
    "integrations": {"actions": [
        {"id": "classes", "integration": "mindbody", "action": "listClasses",
         "params": {"from": "{{request.query.from}}", "to": "{{request.query.to}}"}},
    ]},
}

BOOKINGS = {
    "path": "/bookings",
    "method": "POST",
    "description": "Book a class and text a reminder",
    "integrations": {"actions": [
        {"id": "book", "integration": "mindbody", "action": "bookClass",
         "params": {"clientId": "{{request.body.clientId}}", "classId": "{{request.body.classId}}"}},
        {"id": "remind", "integration": "twilio", "action": "sendSms",
         "params": {"accountSid": "{{env.TWILIO_ACCOUNT_SID}}", "to": "{{request.body.phone}}",
                    "text": "Booked: {{steps.book.result.Visit.ClassName}}"}},
    ]},
    "response": {"booking": "{{steps.book.result}}"},
}

MEMBERSHIPS = {
    "path": "/memberships",
    "method": "post",
    "description": "Create membership",
    "requireAuth": True,
    "integrations": {"actions": [
        {"integration": "stripe", "action": "createSubscription",
         "params": {"customer": "{{request.body.customerId}}", "price": "{{request.body.priceId}}"}},
    ]},
}

DASHBOARD = {
    "path": "/dashboard",
    "method": "GET",
    "description": "Aggregate stats",
    "integrations": {"actions": [
        {"id": "stats", "integration": "mindbody", "action": "siteStats", "params": {"siteId": "{{request.query.siteId}}"}},
        {"id": "subs", "integration": "stripe", "action": "listSubscriptions",
         "params": {"limit": "{{steps.stats.result.activeMembers}}"}},
    ]},
    "response": {"studio": "{{steps.stats.result}}", "activeSubscriptions": "{{steps.subs.result.data}}"},
}

INTEGRATIONS = [MINDBODY, STRIPE, TWILIO]
ROUTES = [CLASSES, BOOKINGS, MEMBERSHIPS, DASHBOARD]


def stored_integration(doc):
    """What a stored integration looks like: methods lower-case, defaults filled in."""
    return {
        "displayName": doc["name"], "description": "", "auth": {"type": "none"}, **doc,
        "endpoints": [{**e, "method": e["method"].lower()} for e in doc.get("endpoints", [])],
    }


def stored_route(doc):
    """What a stored route looks like (without its generated id)."""
    return {
        "description": "", "requireAuth": True, "response": None, **doc, "method": doc["method"].lower(),
        "integrations": {"actions": [
            {"id": a["action"], "params": {}, **a} for a in doc["integrations"]["actions"]
        ]},
    }
