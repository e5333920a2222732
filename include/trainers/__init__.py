"""The project's own training functions, named by specs as `trainers.<module>:<function>`
(the contract is in the README, "Your own training code")."""
