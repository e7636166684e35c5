#!/usr/bin/env python3
"""Generates the customer-support dialogue corpus that kiln's shipped model
(models/support-teacher, models/support-student) is trained on.

Deterministic: the same --seed and --mb give the same bytes. Each dialogue is
a few "Customer: ... / Agent: ..." turns about one topic (orders, refunds,
shipping, accounts, passwords, billing, products, returns, warranty, store
hours, ...), sometimes followed by a second question, with names, products,
order numbers, dates and amounts filled in. Dialogues are separated by a blank
line.

The held-out split (--split heldout) uses another seed and, besides, slot
values (names, products, cities, carriers) and phrasings that the training
split never contains, so its perplexity measures more than memorisation.

  python3 scripts/make_corpus.py --out /tmp/corpus --mb 40
  -> /tmp/corpus/train.txt (40 MB), /tmp/corpus/heldout.txt (1 MB)
"""

import argparse
import multiprocessing
import os
import random
import time

# Slot values. The last item of every "H:"-marked value is held out: the
# training split never uses values that start with "H:".
FIRST_NAMES = """Maria James Aisha Tom Priya Lucas Emma Noah Olivia Liam Sofia Mateo Chloe Ethan Hannah Omar Grace
Daniel Yuki Ben Fatima Leo Zoe Ivan Mia Jack Nina Sam Laura Pedro Anna Ali Julia Ravi Clara Hugo Elena Max Sara Kofi
Ines Paul Lena Marco Ruth Felix Amara Diego Alice Victor Mei Oscar Nora Adam Lucy Tariq Eva Chris Helen Jonas Rosa
H:Bjorn H:Ingrid H:Kwame H:Soren H:Ximena H:Dmitri H:Anouk H:Tobias""".split()
LAST_NAMES = """Garcia Smith Khan Lee Patel Martin Brown Silva Wilson Nguyen Rossi Costa Walker Ahmed Kim Schmidt
Lopez Jones Novak Tanaka Murphy Dubois Hansen Okafor Moreau Fischer Clarke Ivanova Santos Mendes Becker Taylor
H:Lindqvist H:Oyelaran H:Castellano H:Weissmann""".split()
AGENT_NAMES = """Alex Jordan Taylor Morgan Casey Riley Jamie Sam Robin Charlie Dana Kim Lee Pat Drew Quinn
H:Rowan H:Emery""".split()

PRODUCTS = [
    # (name, category)
    ("wireless headphones", "audio"), ("noise-cancelling headphones", "audio"), ("bluetooth speaker", "audio"),
    ("smart speaker", "audio"), ("earbuds", "audio"), ("soundbar", "audio"),
    ("laptop", "computer"), ("gaming laptop", "computer"), ("tablet", "computer"), ("desktop computer", "computer"),
    ("mechanical keyboard", "computer"), ("wireless mouse", "computer"), ("USB-C hub", "computer"),
    ("external hard drive", "computer"), ("monitor", "computer"), ("webcam", "computer"), ("printer", "computer"),
    ("smartphone", "phone"), ("phone case", "phone"), ("charging cable", "phone"), ("power bank", "phone"),
    ("wireless charger", "phone"), ("screen protector", "phone"), ("smartwatch", "phone"), ("fitness tracker", "phone"),
    ("coffee maker", "kitchen"), ("espresso machine", "kitchen"), ("blender", "kitchen"), ("toaster", "kitchen"),
    ("air fryer", "kitchen"), ("electric kettle", "kitchen"), ("rice cooker", "kitchen"), ("stand mixer", "kitchen"),
    ("microwave", "kitchen"), ("food processor", "kitchen"), ("frying pan", "kitchen"), ("knife set", "kitchen"),
    ("vacuum cleaner", "home"), ("robot vacuum", "home"), ("air purifier", "home"), ("desk lamp", "home"),
    ("space heater", "home"), ("humidifier", "home"), ("ceiling fan", "home"), ("office chair", "home"),
    ("standing desk", "home"), ("bookshelf", "home"), ("mattress", "home"), ("duvet cover", "home"),
    ("running shoes", "clothing"), ("winter jacket", "clothing"), ("rain jacket", "clothing"), ("backpack", "clothing"),
    ("jeans", "clothing"), ("hiking boots", "clothing"), ("wool sweater", "clothing"), ("t-shirt", "clothing"),
    ("yoga mat", "sports"), ("bike helmet", "sports"), ("tennis racket", "sports"), ("dumbbell set", "sports"),
    ("camping tent", "sports"), ("sleeping bag", "sports"), ("water bottle", "sports"),
    ("electric toothbrush", "personal"), ("hair dryer", "personal"), ("electric shaver", "personal"),
    ("digital camera", "camera"), ("camera lens", "camera"), ("tripod", "camera"), ("action camera", "camera"),
    ("H:drone", "camera"), ("H:e-reader", "computer"), ("H:pressure cooker", "kitchen"), ("H:hoverboard", "sports"),
    ("H:label printer", "computer"), ("H:baby monitor", "home"),
]
BRANDS = "Nova Zenith Apex Lumo Orbit Kestrel Vireo Halden Brio Tandem Quill Solace H:Marlowe H:Pellucid".split()
COLORS = "black white silver blue red green grey navy pink beige gold H:teal H:burgundy".split()
SIZES = "small medium large extra-large".split()
CARRIERS = "UPS FedEx DHL USPS Royal_Mail Canada_Post H:Aramex H:PostNord".split()
CITIES = """Chicago Denver Boston Seattle Austin Toronto London Manchester Dublin Berlin Madrid Lisbon Sydney Melbourne
Portland Atlanta Phoenix Dallas Vancouver Glasgow H:Reykjavik H:Tallinn H:Winnipeg""".split()
STREETS = "Oak Maple Pine Cedar Elm Main High Park Lake Hill River Church Mill H:Birchwood H:Juniper".split()
STREET_KINDS = "Street Avenue Road Lane Drive Court".split()
MONTHS = "January February March April May June July August September October November December".split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
PAYMENTS = ["credit card", "debit card", "PayPal", "gift card", "Apple Pay", "Google Pay", "store credit",
            "H:bank transfer"]
EMAIL_DOMAINS = "example.com mail.com inbox.net post.org H:fastmail.test".split()
STORE = "ShopRight"
PLANS = ["Basic", "Plus", "Premium", "Family", "H:Business"]


class Gen:
    """Fills templates with slot values drawn from one seeded random stream."""

    def __init__(self, seed, heldout):
        self.r = random.Random(seed)
        self.heldout = heldout

    def usable(self, v):
        return self.heldout or not (isinstance(v, str) and v.startswith("H:"))

    def pick(self, options):
        """One option; options starting with "H:" only in the held-out split."""
        opts = [o for o in options if self.usable(o if isinstance(o, str) else o[0])]
        o = self.r.choice(opts)
        strip = lambda s: s[2:] if isinstance(s, str) and s.startswith("H:") else s
        return tuple(strip(x) for x in o) if isinstance(o, tuple) else strip(o)

    def chance(self, p):
        return self.r.random() < p

    # Slot values.
    def first(self): return self.pick(FIRST_NAMES)
    def last(self): return self.pick(LAST_NAMES)
    def agent(self): return self.pick(AGENT_NAMES)
    def city(self): return self.pick(CITIES)
    def carrier(self): return self.pick(CARRIERS).replace("_", " ")
    def color(self): return self.pick(COLORS)
    def payment(self): return self.pick(PAYMENTS)
    def plan(self): return self.pick(PLANS)

    def product(self):
        name, cat = self.pick(PRODUCTS)
        return name, cat

    def branded(self, name):
        return f"{self.pick(BRANDS)} {name}" if self.chance(0.4) else name

    def order_no(self):
        form = self.r.randrange(3)
        if form == 0:
            return str(self.r.randrange(10_000_000, 99_999_999))
        if form == 1:
            return "#" + str(self.r.randrange(100_000, 999_999))
        letters = "".join(self.r.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2))
        return f"{letters}-{self.r.randrange(1000, 9999)}-{self.r.randrange(100, 999)}"

    def tracking(self):
        return "".join(self.r.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(12))

    def date(self):
        return f"{self.r.choice(MONTHS)} {self.r.randrange(1, 29)}"

    def weekday(self): return self.r.choice(WEEKDAYS)
    def days(self, lo=2, hi=10): return self.r.randrange(lo, hi + 1)

    def money(self, lo=5, hi=900):
        return f"${self.r.randrange(lo, hi)}.{self.r.randrange(100):02d}"

    def email(self, first, last):
        sep = self.r.choice([".", "_", ""])
        num = str(self.r.randrange(1, 99)) if self.chance(0.3) else ""
        return f"{first.lower()}{sep}{last.lower()}{num}@{self.pick(EMAIL_DOMAINS)}"

    def address(self):
        return f"{self.r.randrange(1, 999)} {self.pick(STREETS)} {self.r.choice(STREET_KINDS)}, {self.city()}"

    def phone(self):
        return f"555-{self.r.randrange(100, 999)}-{self.r.randrange(1000, 9999)}"

    def hour(self, lo, hi):
        h = self.r.randrange(lo, hi + 1)
        return f"{h % 12 or 12} {'am' if h < 12 else 'pm'}"


# ----- openings and closings -----

def greeting(g, c):
    first = c["first"]
    return g.pick([
        "Hi", "Hello", "Hi there", "Hello there", "Good morning", "Good afternoon", "Hey", "Hi, good evening",
        f"Hi, this is {first}", f"Hello, my name is {first}", f"Hi, I'm {first}", "H:Greetings",
    ])


def agent_open(g, c):
    a = c["agent"]
    return g.pick([
        f"Thank you for contacting {STORE} support. My name is {a}. How can I help you today?",
        f"Hi, I'm {a} from {STORE}. What can I do for you?",
        f"Hello! You're chatting with {a}. How may I help?",
        f"Welcome to {STORE}. This is {a}. What can I help you with today?",
        f"Hi there, {a} here. How can I help?",
        f"H:Good to hear from you. I'm {a}, how can I assist?",
    ])


def closing(g, c, turns):
    """Appends a polite ending (sometimes short, sometimes two turns)."""
    name = c["first"]
    turns.append(("Customer", g.pick([
        "Thank you so much!", "Great, thanks for your help.", "Perfect, thank you.", "Thanks, that's all I needed.",
        "That's great, thank you.", "Awesome, thanks!", "Okay, thank you for your help.", "Thanks a lot.",
        "Alright, thanks.", "Wonderful, I appreciate it.", "H:Cheers, that sorts it.",
    ])))
    turns.append(("Agent", g.pick([
        f"You're welcome, {name}! Is there anything else I can help you with?",
        "You're welcome! Is there anything else I can do for you today?",
        "Happy to help. Is there anything else you need?",
        f"My pleasure, {name}. Anything else I can help with?",
        "Glad I could help. Is there something else I can assist you with?",
    ])))
    turns.append(("Customer", g.pick([
        "No, that's everything.", "No, that's all. Thanks again.", "Nope, that's it.", "No, thank you.",
        "That's all for today.", "Nothing else, thanks.", "H:All good, bye.",
    ])))
    turns.append(("Agent", g.pick([
        f"Thank you for contacting {STORE}. Have a great day!",
        f"Have a wonderful day, {name}!",
        "Thanks for reaching out. Take care!",
        f"Thank you for choosing {STORE}. Goodbye!",
        "Have a nice day!",
        f"Take care, {name}. Bye!",
    ])))


def ask_order(g):
    return g.pick([
        "Could you please give me your order number?", "Can I have your order number, please?",
        "What is your order number?", "Could you share the order number with me?",
        "May I have the order number so I can look it up?", "What's the order number?",
        "H:Which order is this about? The number would help.",
    ])


def give_order(g, o):
    return g.pick([
        f"Sure, it's {o}.", f"It's {o}.", f"The order number is {o}.", f"Yes, {o}.", f"My order number is {o}.",
        f"Here it is: {o}.", f"Order {o}.", f"H:Should be {o}.",
    ])


def thanks_looking(g, c):
    name = c["first"]
    return g.pick([
        "Thank you. Let me check that for you.", f"Thanks, {name}. One moment while I look it up.",
        "Thanks! Give me a second to pull up your order.", "Got it. Let me take a look.",
        f"Thank you, {name}. I'm checking now.", "One moment please.",
    ])


# ----- topics: each returns the turns after the greeting -----

def topic_late_order(g, c):
    o, (p, _), carrier = c["order"], c["product"], g.carrier()
    t = []
    t.append(("Customer", g.pick([
        "my order hasn't arrived yet.", f"I ordered a {p} and it still hasn't arrived.",
        "I'm still waiting for my package.", f"where is my {p}? It was supposed to be here already.",
        "my delivery is late.", "can you tell me where my order is?", "my package never showed up.",
        f"I haven't received my {p} yet.", "H:my parcel seems to be lost.",
    ])))
    t.append(("Agent", g.pick(["I'm sorry to hear that. ", "I'm sorry about the delay. ", "Let me help with that. ",
                               "I understand, that's frustrating. ", ""]) + ask_order(g)))
    t.append(("Customer", give_order(g, o)))
    t.append(("Agent", thanks_looking(g, c)))
    d0, d1, track = g.date(), g.date(), g.tracking()
    if g.chance(0.5):
        t.append(("Agent", g.pick([
            f"Your {p} shipped with {carrier} on {d0} and should arrive by {d1}. The tracking number is {track}.",
            f"Order {o} left our warehouse on {d0}. {carrier} shows it arriving by {d1}. Your tracking number is {track}.",
            f"I can see that order {o} is with {carrier}. It is expected to arrive by {d1}. You can track it with {track}.",
        ])))
        t.append(("Customer", g.pick(["Okay, I'll wait until then.", "What if it doesn't come by then?",
                                      "Can I get the tracking link by email?", "Okay, good to know."])))
        if t[-1][1].startswith("What if"):
            t.append(("Agent", g.pick([
                f"If it hasn't arrived by {d1}, contact us again and we'll send a replacement at no cost.",
                "If it doesn't arrive by then, we'll reship it or refund you in full, whichever you prefer.",
            ])))
        elif t[-1][1].startswith("Can I"):
            t.append(("Agent", f"Of course. I've sent the tracking link to {c['email']}."))
        else:
            t.append(("Agent", "Great. You'll get an email when it's out for delivery."))
    else:
        t.append(("Agent", g.pick([
            f"It looks like the package was delayed at the {carrier} depot in {g.city()}. I'm sorry about that.",
            f"It seems {carrier} lost track of the package after {d0}. I apologize for the trouble.",
            f"Tracking shows it was marked delivered on {d0}, but I believe you that it never arrived.",
        ])))
        t.append(("Agent", g.pick([
            f"I've sent a replacement {p} with express shipping. It should arrive in {g.days(2, 3)} business days.",
            f"I can send a replacement or issue a full refund of {c['amount']}. Which would you prefer?",
            f"I've opened a claim with {carrier}. If they can't find it within {g.days(2, 5)} days, we'll refund you.",
        ])))
        if "Which would you prefer" in t[-1][1]:
            if g.chance(0.5):
                t.append(("Customer", "A replacement, please."))
                t.append(("Agent", f"Done. Your replacement ships today and the new order number is {g.order_no()}."))
            else:
                t.append(("Customer", "I'd rather have a refund."))
                t.append(("Agent", f"No problem. I've refunded {c['amount']} to your {c['payment']}. "
                                   f"It should appear within {g.days(3, 7)} business days."))
    return t


def topic_refund(g, c):
    o, (p, _), amt, pay = c["order"], c["product"], c["amount"], c["payment"]
    t = [("Customer", g.pick([
        f"I'd like a refund for my {p}.", "I want to get my money back for an order.",
        f"I returned a {p} two weeks ago and still haven't got my refund.", "how long does a refund take?",
        "I was promised a refund but I don't see it yet.", f"can I get a refund on order {o}?",
        "H:I'm after a refund, please.",
    ]))]
    if o not in t[0][1]:
        t.append(("Agent", ask_order(g)))
        t.append(("Customer", give_order(g, o)))
    t.append(("Agent", thanks_looking(g, c)))
    n = g.days(3, 10)
    t.append(("Agent", g.pick([
        f"I can see the refund of {amt} was issued on {g.date()}. It goes back to your {pay} and takes {n} business days to show up.",
        f"We received your return on {g.date()}. I've just processed a refund of {amt} to your {pay}.",
        f"Your {p} is eligible for a full refund of {amt}. Would you like it on your {pay} or as store credit?",
        f"The refund of {amt} is approved. You'll see it on your {pay} within {n} business days.",
    ])))
    if "Would you like" in t[-1][1]:
        choice = g.pick([f"On my {pay}, please.", "Store credit is fine.", "Back to my card, please."])
        t.append(("Customer", choice))
        t.append(("Agent", g.pick([
            f"Done. The refund of {amt} is on its way. You'll get a confirmation email at {c['email']}.",
            f"All set. It should show up within {n} business days.",
        ])))
    elif g.chance(0.5):
        t.append(("Customer", g.pick(["Why does it take so long?", "Will I get an email when it's done?",
                                      "Is the shipping cost refunded too?"])))
        q = t[-1][1]
        if q.startswith("Why"):
            t.append(("Agent", "Refunds are quick on our side, but banks take a few days to post them. I'm sorry for the wait."))
        elif q.startswith("Will"):
            t.append(("Agent", f"Yes, we'll send a confirmation to {c['email']} once the refund has gone through."))
        else:
            t.append(("Agent", g.pick(["Yes, since the item was faulty, the shipping cost is refunded as well.",
                                       f"Shipping is not refundable, but the full price of the {p} is."])))
    return t


def topic_shipping(g, c):
    city = g.city()
    std, exp = g.days(3, 7), g.days(1, 2)
    price, free = g.money(4, 25), g.r.choice([25, 35, 50, 75])
    t = [("Customer", g.pick([
        f"how long does shipping to {city} take?", "what shipping options do you have?",
        "how much is express shipping?", "do you offer free shipping?", "do you ship internationally?",
        f"can I get my order delivered to {city} by {g.weekday()}?", "H:what are your delivery times like?",
    ]))]
    q = t[0][1]
    if "internationally" in q:
        t.append(("Agent", g.pick([
            f"Yes, we ship to over {g.r.randrange(30, 90)} countries. International delivery takes {g.days(7, 14)} to {g.days(15, 21)} business days.",
            "We do. Shipping costs and times depend on the country, and customs fees may apply.",
        ])))
        t.append(("Customer", "Do I have to pay customs fees?"))
        t.append(("Agent", "Customs fees are set by your country and are paid on delivery. We can't cover them, I'm afraid."))
    elif "free" in q:
        t.append(("Agent", f"Yes! Standard shipping is free on orders over ${free}. Below that it costs {price}."))
        t.append(("Customer", g.pick(["Does that include express?", "Great, how long does standard take?"])))
        if "express" in t[-1][1]:
            t.append(("Agent", f"Express shipping is not free, but it's only {g.money(9, 30)} and arrives in {exp} business days."))
        else:
            t.append(("Agent", f"Standard shipping takes {std} business days."))
    else:
        t.append(("Agent", g.pick([
            f"We have standard shipping, which takes {std} business days, and express shipping, which takes {exp}. Express costs {price}.",
            f"Standard delivery to {city} takes about {std} business days. Express is {price} and takes {exp} business days.",
            f"Orders placed before {g.hour(12, 16)} ship the same day. Standard takes {std} days and express takes {exp}.",
        ])))
        if g.chance(0.6):
            t.append(("Customer", g.pick(["Can I upgrade my existing order to express?", "Do you deliver on weekends?",
                                          "Can I pick it up in a store instead?"])))
            q = t[-1][1]
            if "upgrade" in q:
                t.append(("Agent", ask_order(g)))
                t.append(("Customer", give_order(g, c["order"])))
                t.append(("Agent", f"Done. I've upgraded order {c['order']} to express shipping. "
                                   f"The charge of {price} will go to your {c['payment']}."))
            elif "weekends" in q:
                t.append(("Agent", g.pick(["We deliver on Saturdays, but not on Sundays.",
                                           "Weekend delivery is only available with express shipping."])))
            else:
                t.append(("Agent", f"Yes, in-store pickup is free. Your order will be ready at our {city} store "
                                   f"within {g.days(1, 3)} days."))
    return t


def topic_password(g, c):
    t = [("Customer", g.pick([
        "I forgot my password.", "I can't log in to my account.", "how do I reset my password?",
        "my account is locked.", "the password reset email never arrives.", "I keep getting a login error.",
        "H:I'm locked out of my account.",
    ]))]
    t.append(("Agent", g.pick([
        "I can help with that. What is the email address on your account?",
        "No problem. Could you confirm the email address you signed up with?",
        "Sorry about that. Which email address do you use to sign in?",
    ])))
    t.append(("Customer", g.pick([f"It's {c['email']}.", f"{c['email']}", f"I use {c['email']}."])))
    t.append(("Agent", g.pick([
        f"Thanks. I've sent a password reset link to {c['email']}. It's valid for {g.r.choice([15, 30, 60])} minutes.",
        "Thank you. Your account was locked after too many attempts. I've unlocked it and sent you a reset link.",
        f"I've found your account. I just sent a reset link to {c['email']}. Please check your spam folder too.",
    ])))
    if g.chance(0.6):
        t.append(("Customer", g.pick(["I still don't see the email.", "Got it, it worked.",
                                      "What are the password rules?"])))
        q = t[-1][1]
        if q.startswith("I still"):
            t.append(("Agent", g.pick([
                "Sometimes it takes a few minutes. I've sent it again just now.",
                f"Let me resend it. Also, please add support@{STORE.lower()}.com to your contacts.",
            ])))
        elif q.startswith("What"):
            t.append(("Agent", f"It needs at least {g.r.choice([8, 10, 12])} characters, with a number and a capital letter."))
        else:
            t.append(("Agent", "Great! I'd also recommend turning on two-step verification in your account settings."))
    return t


def topic_account(g, c):
    new_first, new_last = g.first(), g.last()
    kind = g.r.randrange(4)
    if kind == 0:
        new_email = g.email(new_first, new_last)
        t = [("Customer", g.pick(["I need to change the email on my account.", "how can I update my email address?"]))]
        t.append(("Agent", "Sure. What is the current email on the account?"))
        t.append(("Customer", f"It's {c['email']}."))
        t.append(("Agent", "Thanks. And what should the new email be?"))
        t.append(("Customer", f"{new_email}, please."))
        t.append(("Agent", f"Done. Your account email is now {new_email}. We've sent a confirmation to both addresses."))
    elif kind == 1:
        addr = g.address()
        t = [("Customer", g.pick(["I moved and need to update my address.", "can you change my shipping address?",
                                  "H:my address on file is out of date."]))]
        t.append(("Agent", "Of course. What is the new address?"))
        t.append(("Customer", f"{addr}."))
        t.append(("Agent", g.pick([f"Thank you. I've updated your address to {addr}.",
                                   f"All set. Future orders will ship to {addr}."])))
        if g.chance(0.5):
            t.append(("Customer", f"Can you also change it for order {c['order']}?"))
            t.append(("Agent", g.pick([f"Order {c['order']} hasn't shipped yet, so I've changed it too.",
                                       f"I'm sorry, order {c['order']} has already shipped, so I can't change its address."])))
    elif kind == 2:
        t = [("Customer", g.pick(["I want to delete my account.", "how do I close my account?"]))]
        t.append(("Agent", "I'm sorry to see you go. Can I ask why you'd like to close it?"))
        t.append(("Customer", g.pick(["I just don't use it anymore.", "I get too many emails.",
                                      "I'm worried about my data."])))
        if "emails" in t[-1][1]:
            t.append(("Agent", "I understand. I can unsubscribe you from all marketing emails instead, if you like."))
            t.append(("Customer", g.pick(["Yes, please do that.", "No, please close the account."])))
        if t[-1][1].startswith("Yes"):
            t.append(("Agent", "Done. You won't get marketing emails anymore, but you'll still get order updates."))
        else:
            t.append(("Agent", f"Okay. I've started the request. Your account and data will be deleted within "
                               f"{g.r.choice([7, 14, 30])} days, and you'll get a confirmation at {c['email']}."))
    else:
        phone = g.phone()
        t = [("Customer", "I need to update the phone number on my account.")]
        t.append(("Agent", "Sure. What is the new number?"))
        t.append(("Customer", f"It's {phone}."))
        t.append(("Agent", f"Thanks. Your phone number is now {phone}. We'll text a code to confirm it."))
    return t


def topic_billing(g, c):
    amt, pay, o = c["amount"], c["payment"], c["order"]
    kind = g.r.randrange(3)
    if kind == 0:
        t = [("Customer", g.pick(["I was charged twice for the same order.", f"I see two charges of {amt} on my card.",
                                  "there's a double charge on my statement.", "H:you billed me two times."]))]
        t.append(("Agent", "I'm sorry about that. " + ask_order(g)))
        t.append(("Customer", give_order(g, o)))
        t.append(("Agent", g.pick([
            f"I see it. The second charge of {amt} is only a pending authorization and will drop off within {g.days(2, 5)} days.",
            f"You're right, you were charged twice. I've refunded the extra {amt} to your {pay}.",
        ])))
    elif kind == 1:
        t = [("Customer", g.pick(["can I get an invoice for my order?", "I need a receipt for my company.",
                                  "where can I find my invoice?"]))]
        t.append(("Agent", ask_order(g)))
        t.append(("Customer", give_order(g, o)))
        t.append(("Agent", g.pick([
            f"I've emailed the invoice for order {o} to {c['email']}.",
            f"You can download it under Orders in your account. I've also sent a copy to {c['email']}.",
        ])))
        if g.chance(0.4):
            t.append(("Customer", "Can you add my company name to it?"))
            t.append(("Agent", "Sure. What company name should appear on the invoice?"))
            t.append(("Customer", f"{g.last()} {g.r.choice(['Ltd', 'Inc', 'GmbH', 'and Sons', 'Consulting'])}."))
            t.append(("Agent", "Done. I've sent you the updated invoice."))
    else:
        plan, price = c["plan"], g.money(5, 30)
        t = [("Customer", g.pick([f"I want to cancel my {plan} subscription.", "why was I charged this month?",
                                  f"how much is the {plan} plan?"]))]
        q = t[0][1]
        if "cancel" in q:
            t.append(("Agent", f"I can do that. Your {plan} plan is paid until {g.date()}. Should I cancel it at the end of the period?"))
            t.append(("Customer", g.pick(["Yes, please.", "Can I get a refund for this month?"])))
            if t[-1][1].startswith("Yes"):
                t.append(("Agent", "Done. You won't be charged again, and you keep your benefits until then."))
            else:
                t.append(("Agent", f"Since you haven't used it this month, I've refunded {price} and cancelled the plan."))
        elif "charged" in q:
            t.append(("Agent", f"That's the monthly fee of {price} for your {plan} plan, which renews on the {g.days(1, 28)}th of each month."))
            t.append(("Customer", "I thought I had cancelled it."))
            t.append(("Agent", f"I see a cancellation attempt that didn't finish. I've cancelled it now and refunded {price}."))
        else:
            t.append(("Agent", f"The {plan} plan costs {price} a month, or {g.money(50, 300)} a year. It includes free shipping and early access to sales."))
    return t


def topic_product(g, c):
    (p, cat), brand = c["product"], g.pick(BRANDS)
    t = []
    if cat in ("audio", "phone", "computer", "camera"):
        t.append(("Customer", g.pick([
            f"how long does the battery of the {brand} {p} last?", f"is the {brand} {p} compatible with my phone?",
            f"does the {p} come with a charger?", f"is the {brand} {p} waterproof?", f"what's the difference between the {p} models?",
        ])))
        q = t[0][1]
        if "battery" in q:
            t.append(("Agent", f"The {brand} {p} lasts about {g.r.randrange(6, 40)} hours on a full charge, and charging takes about {g.r.randrange(1, 4)} hours."))
        elif "compatible" in q:
            t.append(("Agent", f"Yes, the {brand} {p} works with both Android and iPhone over Bluetooth."))
        elif "charger" in q:
            t.append(("Agent", g.pick([f"It comes with a USB-C cable, but the wall charger is sold separately for {g.money(10, 30)}.",
                                       "Yes, a charger and a cable are in the box."])))
        elif "waterproof" in q:
            t.append(("Agent", g.pick([f"It's water resistant to IPX{g.r.randrange(4, 8)}, so it handles rain and splashes, but it shouldn't go under water.",
                                       "It's splash resistant, but not waterproof."])))
        else:
            t.append(("Agent", f"The standard model has {g.r.choice([64, 128, 256])} GB of storage, and the Pro model has {g.r.choice([512, 1024])} GB and a better screen."))
    elif cat == "clothing":
        size = g.r.choice(SIZES)
        t.append(("Customer", g.pick([f"does the {p} run small?", f"is the {p} available in {g.color()}?",
                                      f"what size {p} should I get?"])))
        q = t[0][1]
        if "available" in q:
            t.append(("Agent", g.pick([f"Yes, it's in stock in all sizes.",
                                       f"It's sold out right now, but we expect more on {g.date()}. I can notify you when it's back."])))
        else:
            t.append(("Agent", f"It fits true to size. Most customers who are between sizes take the {size}."))
            t.append(("Customer", "And if it doesn't fit?"))
            t.append(("Agent", f"You can exchange it for free within {g.r.choice([30, 60])} days."))
    else:
        t.append(("Customer", g.pick([f"is the {p} in stock?", f"how big is the {p}?", f"is the {p} easy to clean?",
                                      f"do you have the {p} in {g.color()}?", f"how much does the {p} cost?"])))
        q = t[0][1]
        if "in stock" in q or "do you have" in q:
            t.append(("Agent", g.pick([f"Yes, we have {g.r.randrange(2, 40)} in stock and it ships today if you order before {g.hour(13, 17)}.",
                                       f"It's out of stock online, but our {g.city()} store has a few.",
                                       f"It's back in stock on {g.date()}."])))
        elif "big" in q:
            t.append(("Agent", f"It's {g.r.randrange(20, 90)} cm wide, {g.r.randrange(20, 90)} cm tall and weighs about {g.r.randrange(1, 15)} kg."))
        elif "clean" in q:
            t.append(("Agent", "Yes, the removable parts are dishwasher safe, and the rest wipes clean with a damp cloth."))
        else:
            t.append(("Agent", f"It's {c['amount']} right now, which is {g.r.choice([10, 15, 20, 25])} percent off the usual price."))
    if g.chance(0.4):
        t.append(("Customer", "Great, I'll order one."))
        t.append(("Agent", g.pick(["Great choice! Let me know if you need help with the order.",
                                   f"Wonderful. Use the code WELCOME{g.r.choice([5, 10, 15])} for a discount on your first order."])))
    return t


def topic_return(g, c):
    o, (p, _), days = c["order"], c["product"], g.r.choice([14, 30, 60, 90])
    reason = g.pick(["it doesn't fit", "I changed my mind", "it arrived damaged", "it's the wrong color",
                     "it stopped working", "I ordered the wrong one", "H:it's not what I expected"])
    t = [("Customer", g.pick([f"I want to return my {p}.", f"how do I return an item? {reason[0].upper() + reason[1:]}.",
                              f"can I return a {p} I bought last week?", "what is your return policy?"]))]
    if "policy" in t[0][1]:
        t.append(("Agent", f"You can return most items within {days} days of delivery, as long as they're unused and in the original packaging. Returns are free."))
        t.append(("Customer", "What about opened items?"))
        t.append(("Agent", "Opened items can be returned too, unless they are hygiene products like earbuds or toothbrushes."))
        return t
    t.append(("Agent", g.pick(["Sure, I can help with that. ", "No problem. ", ""]) + ask_order(g)))
    t.append(("Customer", give_order(g, o)))
    if "Why" not in reason and g.chance(0.5):
        t.append(("Agent", "Thanks. Can I ask the reason for the return?"))
        t.append(("Customer", f"{reason[0].upper() + reason[1:]}."))
    t.append(("Agent", g.pick([
        f"Thanks. I've emailed a prepaid return label to {c['email']}. Please send the {p} back within {days} days.",
        f"Your return is approved. Drop the {p} off at any {g.carrier()} location with the label I just emailed you.",
        f"I've started the return. Once we receive the {p}, your refund of {c['amount']} will be issued within {g.days(2, 5)} days.",
    ])))
    if g.chance(0.5):
        t.append(("Customer", g.pick(["Can I exchange it instead?", "Do I need the original box?"])))
        if "exchange" in t[-1][1]:
            t.append(("Agent", f"Of course. Which size or color would you like instead?"))
            t.append(("Customer", f"{g.r.choice(SIZES).capitalize()} in {g.color()}, please."))
            t.append(("Agent", "Done. We'll ship the new one as soon as the return is scanned."))
        else:
            t.append(("Agent", "The original box is best, but any sturdy box will do."))
    return t


def topic_warranty(g, c):
    (p, _), years = c["product"], g.r.choice([1, 2, 3])
    t = [("Customer", g.pick([f"my {p} stopped working.", f"is my {p} still under warranty?",
                              f"the {p} I bought makes a strange noise.", f"my {p} won't turn on anymore.",
                              "H:my device broke after a few months."]))]
    t.append(("Agent", g.pick(["I'm sorry to hear that. When did you buy it?", "Let's sort that out. When was it purchased?"])))
    bought = f"{g.r.choice(MONTHS)} last year" if g.chance(0.5) else f"about {g.r.randrange(2, 11)} months ago"
    t.append(("Customer", g.pick([f"In {bought}.", f"I bought it {bought}.", f"{bought[0].upper() + bought[1:]}."]).replace("In about", "About")))
    t.append(("Agent", f"Thanks. Your {p} has a {years}-year warranty, so it's still covered."))
    t.append(("Agent", g.pick([
        "Have you tried a reset? Hold the power button for 10 seconds, then plug it back in.",
        "Could you try it with another outlet or cable first?",
        f"I can arrange a free repair or a replacement. Which would you prefer?",
    ])))
    if "Which would" in t[-1][1]:
        t.append(("Customer", g.pick(["A replacement, please.", "A repair is fine."])))
        t.append(("Agent", f"Done. I've emailed you a prepaid label. Your claim number is {g.order_no()}."))
    else:
        t.append(("Customer", g.pick(["I tried that, it still doesn't work.", "That fixed it, thanks!"])))
        if t[-1][1].startswith("That"):
            t.append(("Agent", "Great to hear! If it happens again, we'll replace it under the warranty."))
        else:
            t.append(("Agent", f"Thanks for trying. I've started a warranty replacement. You'll receive a new {p} within {g.days(3, 8)} business days."))
    return t


def topic_hours(g, c):
    city = g.city()
    open_h, close_h = g.hour(7, 10), g.hour(17, 21)
    t = [("Customer", g.pick([f"what are your store hours in {city}?", f"is your {city} store open on {g.weekday()}?",
                              f"where is your store in {city}?", "are you open on holidays?",
                              "H:when does your shop open?"]))]
    q = t[0][1]
    if "holidays" in q:
        t.append(("Agent", "Our stores are closed on New Year's Day and Christmas Day. On other holidays we close at 5 pm."))
    elif "where" in q:
        t.append(("Agent", f"Our {city} store is at {g.address().split(',')[0]}, next to the {g.r.choice(['train station', 'mall', 'city library', 'main square'])}."))
    else:
        t.append(("Agent", g.pick([
            f"The {city} store is open from {open_h} to {close_h} Monday to Saturday, and from {g.hour(10, 11)} to {g.hour(16, 18)} on Sunday.",
            f"We're open every day from {open_h} to {close_h}.",
        ])))
    if g.chance(0.5):
        t.append(("Customer", g.pick(["Is there parking?", "Can I return online orders there?"])))
        if "parking" in t[-1][1]:
            t.append(("Agent", g.pick(["Yes, there's free parking behind the store.", "There's a public garage across the street."])))
        else:
            t.append(("Agent", "Yes, you can return online orders at any of our stores. Just bring the receipt or order number."))
    return t


def topic_cancel(g, c):
    o = c["order"]
    t = [("Customer", g.pick(["I'd like to cancel my order.", "can I still cancel an order I placed this morning?",
                              f"please cancel order {o}.", "I ordered the wrong item and want to cancel."]))]
    if o not in t[0][1]:
        t.append(("Agent", ask_order(g)))
        t.append(("Customer", give_order(g, o)))
    if g.chance(0.6):
        t.append(("Agent", f"Order {o} hasn't shipped yet, so I've cancelled it. You'll get a full refund of {c['amount']} to your {c['payment']}."))
    else:
        t.append(("Agent", f"I'm sorry, order {o} has already shipped, so I can't cancel it. Once it arrives, you can return it for free."))
        t.append(("Customer", "Okay, how do I return it?"))
        t.append(("Agent", f"Just reply to your shipping email or visit the Returns page, and we'll send you a prepaid label."))
    return t


def topic_damaged(g, c):
    o, (p, _) = c["order"], c["product"]
    t = [("Customer", g.pick([f"my {p} arrived broken.", "the package was damaged and the item is cracked.",
                              f"I received the wrong item. I ordered a {p}.", f"part of my {p} is missing.",
                              "H:the box was crushed when it came."]))]
    t.append(("Agent", "I'm so sorry about that. " + ask_order(g)))
    t.append(("Customer", give_order(g, o)))
    if g.chance(0.5):
        t.append(("Agent", "Thank you. Could you send a photo of the item and the packaging?"))
        t.append(("Customer", g.pick(["Sure, I just uploaded it.", "Okay, I've attached two photos."])))
    t.append(("Agent", g.pick([
        f"Thanks. I've sent a replacement {p} with free express shipping. You don't need to return the damaged one.",
        f"I've arranged a replacement. It ships today and should arrive by {g.date()}.",
        f"I've refunded {c['amount']} to your {c['payment']}. I'm sorry for the trouble.",
    ])))
    return t


def topic_discount(g, c):
    code = g.r.choice(["SAVE", "WELCOME", "SPRING", "SUMMER", "FALL", "WINTER", "VIP", "H:FLASH"]).replace("H:", "")
    code = code + str(g.r.choice([5, 10, 15, 20, 25]))
    t = [("Customer", g.pick([f"the discount code {code} isn't working.", "do you have any discounts right now?",
                              "can I use two discount codes at once?", "I forgot to use my coupon at checkout."]))]
    q = t[0][1]
    if "isn't working" in q:
        t.append(("Agent", g.pick([f"I'm sorry. The code {code} expired on {g.date()}, but I can give you a new one: SORRY{g.r.choice([10, 15])}.",
                                   f"The code {code} only works on orders over ${g.r.choice([30, 50, 100])}. Your cart is a bit below that."])))
    elif "any discounts" in q:
        t.append(("Agent", f"Yes! There's {g.r.choice([10, 15, 20, 30])} percent off {g.pick(PRODUCTS)[0]}s this week, and new customers get {g.r.choice([5, 10])} percent off with WELCOME10."))
    elif "two" in q:
        t.append(("Agent", "Only one discount code can be used per order, but it's applied to the whole cart."))
    else:
        t.append(("Agent", ask_order(g)))
        t.append(("Customer", give_order(g, c["order"])))
        t.append(("Agent", f"No problem. I've applied the discount and refunded {g.money(3, 40)} to your {c['payment']}."))
    return t


TOPICS = [(topic_late_order, 3), (topic_refund, 2), (topic_shipping, 2), (topic_password, 2), (topic_account, 2),
          (topic_billing, 2), (topic_product, 3), (topic_return, 2), (topic_warranty, 2), (topic_hours, 1),
          (topic_cancel, 1), (topic_damaged, 2), (topic_discount, 1)]
TOPIC_FNS = [f for f, _ in TOPICS]
TOPIC_WEIGHTS = [w for _, w in TOPICS]


def dialogue(g):
    first, last = g.first(), g.last()
    c = {"first": first, "last": last, "agent": g.agent(), "order": g.order_no(), "product": g.product(),
         "amount": g.money(), "payment": g.payment(), "email": g.email(first, last), "plan": g.plan()}
    c["product"] = (g.branded(c["product"][0]), c["product"][1])
    turns = []
    topic = g.r.choices(TOPIC_FNS, TOPIC_WEIGHTS)[0]
    body = topic(g, c)
    # Open either with a greeting exchange or straight away ("Hi, my order ...").
    if g.chance(0.35):
        turns.append(("Customer", greeting(g, c) + "."))
        turns.append(("Agent", agent_open(g, c)))
        first_line = body[0][1]
        body[0] = ("Customer", first_line[0].upper() + first_line[1:])
    else:
        first_line = body[0][1]
        sep = g.pick([", ", ". ", "! "])
        if sep == ", ":
            body[0] = ("Customer", greeting(g, c) + sep + first_line)
        else:
            body[0] = ("Customer", greeting(g, c) + sep + first_line[0].upper() + first_line[1:])
    turns += body
    if g.chance(0.25):
        turns.append(("Customer", g.pick(["Also, one more question.", "One more thing.", "Actually, I have another question."])))
        turns.append(("Agent", "Sure, go ahead."))
        more = g.r.choices(TOPIC_FNS, TOPIC_WEIGHTS)[0](g, c)
        first_line = more[0][1]
        more[0] = ("Customer", first_line[0].upper() + first_line[1:])
        turns += more
    if g.chance(0.8):
        closing(g, c, turns)
    # Merge consecutive turns of the same speaker into one.
    merged = []
    for who, text in turns:
        if merged and merged[-1][0] == who:
            merged[-1] = (who, merged[-1][1] + " " + text)
        else:
            merged.append((who, text))
    return "\n".join(f"{who}: {text}" for who, text in merged)


CHUNK_BYTES = 1_000_000


def chunk(args):
    """About CHUNK_BYTES of dialogues from their own seed (chunks run in parallel)."""
    seed, heldout, target_bytes = args
    g = Gen(seed, heldout)
    parts, size = [], 0
    while size < target_bytes:
        d = dialogue(g)
        parts.append(d)
        size += len(d) + 2
    return "\n\n".join(parts)


def generate(seed, heldout, target_bytes, pool):
    n = max(1, round(target_bytes / CHUNK_BYTES))
    jobs = [(seed * 100_003 + i, heldout, target_bytes / n) for i in range(n)]
    return "\n\n".join(pool.map(chunk, jobs)) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/kiln-corpus", help="folder for train.txt and heldout.txt")
    ap.add_argument("--mb", type=float, default=40, help="size of the training split in MB")
    ap.add_argument("--heldout-mb", type=float, default=1, help="size of the held-out split in MB")
    ap.add_argument("--seed", type=int, default=1234, help="seed of the training split")
    ap.add_argument("--heldout-seed", type=int, default=987654, help="seed of the held-out split")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    pool = multiprocessing.Pool(min(os.cpu_count() or 1, 16))
    for name, seed, heldout, mb in (("train", a.seed, False, a.mb), ("heldout", a.heldout_seed, True, a.heldout_mb)):
        text = generate(seed, heldout, int(mb * 1e6), pool)
        path = os.path.join(a.out, name + ".txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{path}: {len(text.encode()) / 1e6:.1f} MB, {text.count(chr(10) + chr(10)) + 1} dialogues")
    print(f"corpus generated in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
