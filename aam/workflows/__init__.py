"""The engine's workflows behind the public functions of `aam.api`, one module each, carved into small steps:
`common` (what they share), `pretrain`, `finetune`, `infer` (predict and embed)."""
